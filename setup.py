from setuptools import find_packages, setup

setup(name='mmloss_ext', version='0.1.0', packages=find_packages(include=['mmloss_ext', 'mmloss_ext.*']),
      python_requires='>=3.11')
