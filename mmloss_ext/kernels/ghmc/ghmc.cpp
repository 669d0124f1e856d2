// Fused CPU kernels of the gradient harmonizing classification loss, GHM-C.
//
// The readable reference is mmloss_ext/losses/ghm.py (ghmc_loss); these kernels compute the same
// steps in one pass over memory forward and one backward, vectorised with at::vec (the bins too:
// floor(g * bins) corrected against the gathered edges, see Binner; only the histogram's
// increments are scalar) and parallelised with at::parallel_for:
//
//   * ghmc_histogram (pass 1): per element p = sigmoid(x), g = |p - t|, its bin (edges[i] <= g <
//     edges[i + 1], against the edges tensor the eager path uses) and the BCE; per bin the number
//     of valid elements (weight > 0) and the sum of their BCE. The last slot (index bins) counts the
//     valid elements outside the bins (g NaN) and sums the BCE of those and of the invalid elements
//     (which the caller weights by 0, so that a non-finite logit still propagates as in the eager
//     loss * weight). Rows are cut into fixed chunks, each with its own histogram, merged in chunk
//     order: the result does not depend on the number of threads.
//   * the bin weights follow in Python (a few values: losses/ghm.py harmonize), and the weighted
//     total is sum_b table[b] * sums[b]: no second pass for 'mean'/'sum';
//   * ghmc_forward ('none'): table[bin] * BCE per element; ghmc_backward: table[bin] * (p - t)
//     times the upstream gradient, recomputing p and the bin from the saved inputs.
//
// Inputs: x (N, K) logits; a dense target (N, K) in [0, 1] or int64 labels (N,) (one-hot, label K =
// background); an optional weight per row (N,) or per element (N, K), of which only > 0 matters.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include "../cpp/common.h"
#include "../cpp/registry.h"
#include "../cpp/vec_common.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

namespace {

using namespace mmloss_ext;  // the shared helpers
using at::vec::Vectorized;

template <typename T>
struct GhmRows {
  int64_t rows = 0, cols = 0, bins = 0;
  const T* x = nullptr;
  const T* target = nullptr;        // dense (N, K) target, or
  const int64_t* labels = nullptr;  // (N,) labels, one-hot
  const T* wrow = nullptr;          // (N,) weight
  const T* wfull = nullptr;         // (N, K) weight
  const T* edges = nullptr;         // (bins + 1,)
  Vectorized<T> iota = Vectorized<T>::arange(T(0), T(1));

  Vectorized<T> target_at(int64_t n, int64_t c, int64_t cnt) const {
    using V = Vectorized<T>;
    if (target != nullptr) return load(target + n * cols + c, cnt);
    return V::blendv(V(T(0)), V(T(1)), iota == V(T(labels[n] - c)));
  }

  // lanes whose weight is positive (all lanes without a weight)
  Vectorized<T> valid_at(int64_t n, int64_t c, int64_t cnt) const {
    using V = Vectorized<T>;
    const V all = V(T(1)) == V(T(1));
    if (wrow != nullptr && !(wrow[n] > T(0))) return V(T(0));
    return wfull != nullptr ? load(wfull + n * cols + c, cnt) > V(T(0)) : all;
  }
};

// The bin of every lane of g, edges[i] <= g < edges[i + 1], against the edges tensor the eager path
// uses (bucketize); `bins` outside [edges[0], edges[bins]) (NaN included) or where `valid` is false.
// floor(g * bins) is within one of the bin (the edges are i / bins rounded; bins <= 2^20): one
// comparison each way with the gathered edges makes it exact.
template <typename T>
struct Binner {
  using V = Vectorized<T>;
  using I = at::vec::int_same_size_t<T>;
  using VI = Vectorized<I>;
  const T* edges;
  V first, last, fbins, top;
  VI outside;
  Binner(const T* e, int64_t bins)
      : edges(e), first(e[0]), last(e[bins]), fbins(T(bins)), top(T(bins - 1)), outside(I(bins)) {}

  VI operator()(const V& g, const V& valid) const {
    const V inside = (g >= first) & (g < last) & valid;
    const V gs = V::blendv(V(T(0)), g, inside);
    VI i = at::vec::convert_to_int_of_same_size<T>(at::vec::minimum((gs * fbins).floor(), top));
    i = i + at::vec::cast<I>(gs < at::vec::gather<sizeof(T)>(edges, i));       // -1: below its lower edge
    i = i - at::vec::cast<I>(gs >= at::vec::gather<sizeof(T)>(edges + 1, i));  // +1: at its upper edge
    return VI::blendv(outside, i, at::vec::cast<I>(inside));
  }
};

// p = sigmoid(x) as torch's 1 / (1 + exp(-x)) for x >= 0 (and exp(x) / (1 + exp(x)) below, from the
// same exp(-|x|)), bce = max(x, 0) - x t + log1p(exp(-|x|))
template <typename T>
struct Sigmoid {
  using V = Vectorized<T>;
  V p, e;
  explicit Sigmoid(const V& x) {
    e = x.abs().neg().exp();
    const V r = V(T(1)) / (V(T(1)) + e);
    p = V::blendv(e * r, r, x >= V(T(0)));
  }
  V bce(const V& x, const V& t) const { return at::vec::maximum(x, V(T(0))) - x * t + e.log1p(); }
};

inline int64_t chunk_rows(int64_t cols) { return rows_per_task(cols, 16384); }

template <typename T>
GhmRows<T> make_ghm_rows(const at::Tensor& x, const c10::optional<at::Tensor>& target,
                         const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& wrow,
                         const c10::optional<at::Tensor>& wfull, const at::Tensor& edges) {
  GhmRows<T> a;
  a.rows = x.size(0);
  a.cols = x.size(1);
  a.bins = edges.numel() - 1;
  a.x = x.data_ptr<T>();
  a.target = ptr_or_null<T>(target);
  a.labels = ptr_or_null<int64_t>(labels);
  a.wrow = ptr_or_null<T>(wrow);
  a.wfull = ptr_or_null<T>(wfull);
  a.edges = edges.data_ptr<T>();
  return a;
}

void check_ghm(const at::Tensor& x, const at::Tensor& edges, const c10::optional<at::Tensor>& target,
               std::initializer_list<c10::optional<at::Tensor>> others) {
  check_inputs("mmloss_ext fused GHM-C", x, 2, /*exact=*/true, others, kAlsoLong);
  TORCH_CHECK(edges.is_contiguous() && edges.dim() == 1 && edges.numel() >= 2 && edges.numel() <= (1 << 20) + 1 &&
              edges.scalar_type() == x.scalar_type(), "mmloss_ext fused ghm: bad edges");
  TORCH_CHECK(!(target.has_value() && target->defined()) || target->numel() == x.numel(), "mmloss_ext fused ghm: target shape");
}

// Visit rows [begin, end) a vector at a time: f(offset, cnt, x, t, sigmoid parts, valid lanes).
template <typename T, typename F>
inline void visit_rows(const GhmRows<T>& a, int64_t begin, int64_t end, F&& f) {
  using V = Vectorized<T>;
  constexpr int64_t vs = V::size();
  for (int64_t n = begin; n < end; ++n) {
    for (int64_t c = 0; c < a.cols; c += vs) {
      const int64_t cnt = std::min(vs, a.cols - c), off = n * a.cols + c;
      const V x = load(a.x + off, cnt);
      f(off, cnt, x, a.target_at(n, c, cnt), Sigmoid<T>(x), a.valid_at(n, c, cnt));
    }
  }
}

// -> (counts (bins + 1,) int64, sums (bins + 1,) float64), see the file comment
std::tuple<at::Tensor, at::Tensor> ghmc_histogram(at::Tensor x, c10::optional<at::Tensor> target,
                                                  c10::optional<at::Tensor> labels, c10::optional<at::Tensor> wrow,
                                                  c10::optional<at::Tensor> wfull, at::Tensor edges) {
  check_ghm(x, edges, target, {target, labels, wrow, wfull});
  const int64_t bins = edges.numel() - 1, slots = bins + 1;
  const int64_t step = chunk_rows(x.size(1)), chunks = (x.size(0) + step - 1) / step;
  at::Tensor counts = at::zeros({slots}, x.options().dtype(at::kLong));
  at::Tensor sums = at::zeros({slots}, x.options().dtype(at::kDouble));
  if (chunks == 0) return {counts, sums};
  std::vector<int64_t> ccount(chunks * slots, 0);
  std::vector<double> csum(chunks * slots, 0.0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ghmc_histogram", [&] {
    using T = scalar_t;
    using I = at::vec::int_same_size_t<T>;
    constexpr int64_t vs = Vectorized<T>::size();
    const GhmRows<T> a = make_ghm_rows<T>(x, target, labels, wrow, wfull, edges);
    const Binner<T> binner(a.edges, bins);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
      // the sums alternate between two copies by lane (shorter dependency chains on a crowded bin);
      // the counts go to a trash slot past the last one for the invalid lanes
      std::vector<double> sum2(2 * slots);
      std::vector<int64_t> count(slots + 1);
      alignas(64) I sb[vs];
      alignas(64) I cb_[vs];
      alignas(64) T lb[vs];
      for (int64_t k = cb; k < ce; ++k) {
        std::fill(sum2.begin(), sum2.end(), 0.0);
        std::fill(count.begin(), count.end(), 0);
        visit_rows(a, k * step, std::min(a.rows, (k + 1) * step),
                   [&](int64_t, int64_t cnt, const auto& xv, const auto& tv, const auto& s, const auto& valid) {
                     using VI = Vectorized<I>;
                     const VI b = binner((s.p - tv).abs(), valid);
                     b.store(sb);
                     VI::blendv(VI(I(slots)), b, at::vec::cast<I>(valid)).store(cb_);
                     s.bce(xv, tv).store(lb);
                     for (int64_t j = 0; j < cnt; ++j) {
                       sum2[(j & 1) * slots + sb[j]] += double(lb[j]);
                       ++count[cb_[j]];
                     }
                   });
        for (int64_t b = 0; b < slots; ++b) {
          ccount[k * slots + b] = count[b];
          csum[k * slots + b] = sum2[b] + sum2[slots + b];
        }
      }
    });
  });
  int64_t* co = counts.data_ptr<int64_t>();
  double* so = sums.data_ptr<double>();
  for (int64_t k = 0; k < chunks; ++k) {  // fixed order: deterministic sums
    for (int64_t b = 0; b < slots; ++b) {
      co[b] += ccount[k * slots + b];
      so[b] += csum[k * slots + b];
    }
  }
  return {counts, sums};
}

void check_table(const at::Tensor& x, const at::Tensor& edges, const at::Tensor& table) {
  TORCH_CHECK(table.is_contiguous() && table.numel() == edges.numel() && table.scalar_type() == x.scalar_type(),
              "mmloss_ext fused ghm: the table holds one weight per bin and a last 0");
}

// 'none': table[bin] * bce per element (an invalid element: table[bins] = 0 times its BCE)
at::Tensor ghmc_forward(at::Tensor x, c10::optional<at::Tensor> target, c10::optional<at::Tensor> labels,
                        c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, at::Tensor edges,
                        at::Tensor table) {
  check_ghm(x, edges, target, {target, labels, wrow, wfull});
  check_table(x, edges, table);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ghmc_forward", [&] {
    using T = scalar_t;
    const GhmRows<T> a = make_ghm_rows<T>(x, target, labels, wrow, wfull, edges);
    const Binner<T> binner(a.edges, a.bins);
    const T* w = table.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, a.rows, chunk_rows(a.cols), [&](int64_t b, int64_t e) {
      visit_rows(a, b, e, [&](int64_t off, int64_t cnt, const auto& xv, const auto& tv, const auto& s, const auto& valid) {
        const auto wv = at::vec::gather<sizeof(T)>(w, binner((s.p - tv).abs(), valid));
        (wv * s.bce(xv, tv)).store(o + off, cnt);
      });
    });
  });
  return out;
}

// d x = gscale * gfull * table[bin] * (p - t)
at::Tensor ghmc_backward(at::Tensor x, c10::optional<at::Tensor> target, c10::optional<at::Tensor> labels,
                         c10::optional<at::Tensor> wrow, c10::optional<at::Tensor> wfull, at::Tensor edges,
                         at::Tensor table, double gscale, c10::optional<at::Tensor> gfull) {
  check_ghm(x, edges, target, {target, labels, wrow, wfull, gfull});
  check_table(x, edges, table);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mmloss_ext_ghmc_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const GhmRows<T> a = make_ghm_rows<T>(x, target, labels, wrow, wfull, edges);
    const Binner<T> binner(a.edges, a.bins);
    const T* w = table.data_ptr<T>();
    const T* gf = ptr_or_null<T>(gfull);
    const V scale = V(T(gscale));
    T* d = dx.data_ptr<T>();
    at::parallel_for(0, a.rows, chunk_rows(a.cols), [&](int64_t b, int64_t e) {
      visit_rows(a, b, e, [&](int64_t off, int64_t cnt, const auto&, const auto& tv, const auto& s, const auto& valid) {
        const V diff = s.p - tv;
        V v = scale * at::vec::gather<sizeof(T)>(w, binner(diff.abs(), valid)) * diff;
        if (gf != nullptr) v = v * load(gf + off, cnt);
        v.store(d + off, cnt);
      });
    });
  });
  return dx;
}

void register_ghmc(pybind11::module_& m) {
  m.def("ghmc_histogram", &ghmc_histogram);
  m.def("ghmc_forward", &ghmc_forward);
  m.def("ghmc_backward", &ghmc_backward);
}

}  // namespace

MMLOSS_REGISTER_OP(register_ghmc);
