// The kernels' ids and constants, from mmloss_ext/core/abi.py (where each is documented): setup.py
// passes them as MMLOSS_* macros (core/abi.py's cpp_macros). No value is written here.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <vector>

#ifndef MMLOSS_ABI
#error "mmloss_ext: build with setup.py, which defines the MMLOSS_* macros from mmloss_ext/core/abi.py"
#endif

namespace mmloss_ext {

constexpr int64_t kAbi = MMLOSS_ABI;

enum ElementwiseKind : int64_t {
  kFocal = MMLOSS_ELEMENTWISE_FOCAL,
  kQualityFocal = MMLOSS_ELEMENTWISE_QUALITY_FOCAL,
  kVarifocal = MMLOSS_ELEMENTWISE_VARIFOCAL,
  kSmoothL1 = MMLOSS_ELEMENTWISE_SMOOTH_L1,
  kBalancedL1 = MMLOSS_ELEMENTWISE_BALANCED_L1,
};

enum BoxKind : int64_t {
  kIoULinear = MMLOSS_BOX_IOU_LINEAR,
  kIoUSquare = MMLOSS_BOX_IOU_SQUARE,
  kIoULog = MMLOSS_BOX_IOU_LOG,
  kGIoU = MMLOSS_BOX_GIOU,
  kDIoU = MMLOSS_BOX_DIOU,
  kCIoU = MMLOSS_BOX_CIOU,
  kExtendedIoU = MMLOSS_BOX_EXTENDED_IOU,
  kSIoU = MMLOSS_BOX_SIOU,
  kEfficientIoU = MMLOSS_BOX_EFFICIENT_IOU,
  kWIoU = MMLOSS_BOX_WIOU,
};

enum OutMode : int64_t {
  kOutTotal = MMLOSS_OUT_TOTAL,
  kOutElements = MMLOSS_OUT_ELEMENTS,
  kOutRows = MMLOSS_OUT_ROWS,
};

// the layouts of the fixed hyper-parameter lists: the index of each value, and their number (Size)
enum DiceHp : int64_t {  // core/abi.py's DICE_HP
  kDiceHpSigmoid = MMLOSS_DICE_HP_SIGMOID,
  kDiceHpNaive = MMLOSS_DICE_HP_NAIVE,
  kDiceHpEps = MMLOSS_DICE_HP_EPS,
  kDiceHpHasIgnore = MMLOSS_DICE_HP_HAS_IGNORE,
  kDiceHpIgnoreIndex = MMLOSS_DICE_HP_IGNORE_INDEX,
  kDiceHpSize = MMLOSS_DICE_HP_SIZE,
};

enum GaussianFocalHp : int64_t {  // core/abi.py's GAUSSIAN_FOCAL_HP
  kGaussianFocalHpAlpha = MMLOSS_GAUSSIAN_FOCAL_HP_ALPHA,
  kGaussianFocalHpGamma = MMLOSS_GAUSSIAN_FOCAL_HP_GAMMA,
  kGaussianFocalHpPosWeight = MMLOSS_GAUSSIAN_FOCAL_HP_POS_WEIGHT,
  kGaussianFocalHpNegWeight = MMLOSS_GAUSSIAN_FOCAL_HP_NEG_WEIGHT,
  kGaussianFocalHpSize = MMLOSS_GAUSSIAN_FOCAL_HP_SIZE,
};

constexpr double kSmoothL1MinBeta = MMLOSS_SMOOTH_L1_MIN_BETA;
constexpr double kSIoUExpMax = MMLOSS_SIOU_EXP_MAX;
constexpr double kSIoUOffset2Min = MMLOSS_SIOU_OFFSET2_MIN;
constexpr double kDiceDenominatorMin = MMLOSS_DICE_DENOMINATOR_MIN;
constexpr double kGaussianFocalEps = MMLOSS_GAUSSIAN_FOCAL_EPS;

// the number of hyper-parameters of a kind, -1 for an unknown kind (a switch: a repeated id does not compile)
inline int64_t elementwise_hp_size(int64_t kind) {
  switch (kind) {
    case kFocal: return MMLOSS_ELEMENTWISE_HP_FOCAL;
    case kQualityFocal: return MMLOSS_ELEMENTWISE_HP_QUALITY_FOCAL;
    case kVarifocal: return MMLOSS_ELEMENTWISE_HP_VARIFOCAL;
    case kSmoothL1: return MMLOSS_ELEMENTWISE_HP_SMOOTH_L1;
    case kBalancedL1: return MMLOSS_ELEMENTWISE_HP_BALANCED_L1;
    default: return -1;
  }
}

inline int64_t box_hp_size(int64_t kind) {
  switch (kind) {
    case kIoULinear: return MMLOSS_BOX_HP_IOU_LINEAR;
    case kIoUSquare: return MMLOSS_BOX_HP_IOU_SQUARE;
    case kIoULog: return MMLOSS_BOX_HP_IOU_LOG;
    case kGIoU: return MMLOSS_BOX_HP_GIOU;
    case kDIoU: return MMLOSS_BOX_HP_DIOU;
    case kCIoU: return MMLOSS_BOX_HP_CIOU;
    case kExtendedIoU: return MMLOSS_BOX_HP_EXTENDED_IOU;
    case kSIoU: return MMLOSS_BOX_HP_SIOU;
    case kEfficientIoU: return MMLOSS_BOX_HP_EFFICIENT_IOU;
    case kWIoU: return MMLOSS_BOX_HP_WIOU;
    default: return -1;
  }
}

// whether a box kind adds eps to its denominators (d + eps, as mmdet's own code of that loss) rather than
// clamping them at eps (max(d, eps), as mmdet's bbox_overlaps): core/abi.py's BOX_EPS_ADDED
constexpr bool box_eps_added(int64_t kind) {
  switch (kind) {
    case kIoULinear: return MMLOSS_BOX_EPS_ADDED_IOU_LINEAR;
    case kIoUSquare: return MMLOSS_BOX_EPS_ADDED_IOU_SQUARE;
    case kIoULog: return MMLOSS_BOX_EPS_ADDED_IOU_LOG;
    case kGIoU: return MMLOSS_BOX_EPS_ADDED_GIOU;
    case kDIoU: return MMLOSS_BOX_EPS_ADDED_DIOU;
    case kCIoU: return MMLOSS_BOX_EPS_ADDED_CIOU;
    case kExtendedIoU: return MMLOSS_BOX_EPS_ADDED_EXTENDED_IOU;
    case kSIoU: return MMLOSS_BOX_EPS_ADDED_SIOU;
    case kEfficientIoU: return MMLOSS_BOX_EPS_ADDED_EFFICIENT_IOU;
    case kWIoU: return MMLOSS_BOX_EPS_ADDED_WIOU;
    default: return false;
  }
}

// a forward's out_mode: kOutTotal, kOutElements, or (`rows`: the elementwise kernels) kOutRows
inline void check_out_mode(int64_t out_mode, bool rows) {
  TORCH_CHECK(out_mode == kOutTotal || out_mode == kOutElements || (rows && out_mode == kOutRows),
              "mmloss_ext fused: out_mode ", out_mode, " is not one this kernel supports");
}

// a fixed-layout hyper-parameter list (DiceHp, GaussianFocalHp) holds its `size` values
inline void check_hp_size(const char* who, const std::vector<double>& h, int64_t size) {
  TORCH_CHECK(int64_t(h.size()) == size, who, ": expects ", size, " hyper-parameters, got ", h.size());
}

// What the module was built with, in the layout of core/abi.py's interface(), from the enumerators
// and constants the kernels use: kernels/backends.py refuses a build whose report differs.
inline pybind11::dict interface_report() {
  pybind11::dict ek, ek_hp, box, box_hp, box_added, out, dice_hp, gaussian_focal_hp, d;
  const std::pair<const char*, int64_t> elementwise[] = {{"FOCAL", kFocal}, {"QUALITY_FOCAL", kQualityFocal},
                                                         {"VARIFOCAL", kVarifocal}, {"SMOOTH_L1", kSmoothL1},
                                                         {"BALANCED_L1", kBalancedL1}};
  for (const auto& [name, id] : elementwise) {
    ek[name] = id;
    ek_hp[name] = elementwise_hp_size(id);
  }
  const std::pair<const char*, int64_t> boxes[] = {
      {"IOU_LINEAR", kIoULinear}, {"IOU_SQUARE", kIoUSquare},   {"IOU_LOG", kIoULog},
      {"GIOU", kGIoU},            {"DIOU", kDIoU},              {"CIOU", kCIoU},
      {"EXTENDED_IOU", kExtendedIoU}, {"SIOU", kSIoU},          {"EFFICIENT_IOU", kEfficientIoU},
      {"WIOU", kWIoU}};
  for (const auto& [name, id] : boxes) {
    box[name] = id;
    box_hp[name] = box_hp_size(id);
    box_added[name] = int64_t(box_eps_added(id));
  }
  const std::pair<const char*, int64_t> dice[] = {
      {"SIGMOID", kDiceHpSigmoid}, {"NAIVE", kDiceHpNaive}, {"EPS", kDiceHpEps},
      {"HAS_IGNORE", kDiceHpHasIgnore}, {"IGNORE_INDEX", kDiceHpIgnoreIndex}, {"SIZE", kDiceHpSize}};
  for (const auto& [name, index] : dice) dice_hp[name] = index;
  const std::pair<const char*, int64_t> gaussian_focal[] = {
      {"ALPHA", kGaussianFocalHpAlpha}, {"GAMMA", kGaussianFocalHpGamma}, {"POS_WEIGHT", kGaussianFocalHpPosWeight},
      {"NEG_WEIGHT", kGaussianFocalHpNegWeight}, {"SIZE", kGaussianFocalHpSize}};
  for (const auto& [name, index] : gaussian_focal) gaussian_focal_hp[name] = index;
  out["TOTAL"] = int64_t(kOutTotal);
  out["ELEMENTS"] = int64_t(kOutElements);
  out["ROWS"] = int64_t(kOutRows);
  d["abi"] = kAbi;
  d["ElementwiseKind"] = ek;
  d["BoxKind"] = box;
  d["OutMode"] = out;
  d["ElementwiseHp"] = ek_hp;
  d["BoxHp"] = box_hp;
  d["BoxEpsAdded"] = box_added;
  d["DiceHp"] = dice_hp;
  d["GaussianFocalHp"] = gaussian_focal_hp;
  d["SMOOTH_L1_MIN_BETA"] = kSmoothL1MinBeta;
  d["SIOU_EXP_MAX"] = kSIoUExpMax;
  d["SIOU_OFFSET2_MIN"] = kSIoUOffset2Min;
  d["DICE_DENOMINATOR_MIN"] = kDiceDenominatorMin;
  d["GAUSSIAN_FOCAL_EPS"] = kGaussianFocalEps;
  return d;
}

}  // namespace mmloss_ext
