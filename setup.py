import re
from pathlib import Path

from setuptools import find_packages, setup

# one version: labelreg/__init__.py's __version__ (read as text: importing the package needs its dependencies)
VERSION = re.search(r'^__version__ = "([^"]+)"', (Path(__file__).parent / "labelreg" / "__init__.py").read_text(),
                    re.MULTILINE).group(1)

setup(
    name="labelreg",
    version=VERSION,
    description="Zoom-out segmenters, label-structure regularization and joint depth on NYUv2",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["labelreg", "labelreg.*", "depth", "depth.*"]),
    package_data={"labelreg.demo": ["report_template.md"]},  # the demo report's prose, read at run time
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "kornia>=0.7",
        "numpy",
        "scipy",
        "h5py",
        "pillow",
        "pyyaml",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout", "pytest-xdist", "submitit"],  # submitit: `labelreg study` tests
                    "cluster": ["submitit"]},  # `labelreg study --launcher submitit`
    entry_points={"console_scripts": ["labelreg=labelreg.cli:main"]},
)
