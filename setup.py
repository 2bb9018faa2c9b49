from setuptools import find_packages, setup

setup(
    name="labelreg",
    version="0.1.0",
    description="Zoom-out segmenters, label-structure regularization and joint depth on NYUv2",
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
    extras_require={"test": ["pytest>=7", "pytest-timeout", "submitit"],  # submitit: `labelreg study` tests
                    "cluster": ["submitit"]},  # `labelreg study --launcher submitit`
    entry_points={"console_scripts": ["labelreg=labelreg.cli:main"]},
)
