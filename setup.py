"""Maps each top-level folder onto ``armflow.<folder>`` (armflow is a namespace: no armflow/ dir)."""
from setuptools import find_packages, setup

TOP_LEVEL = ["policies", "sim", "hardware", "control", "data", "workflows", "configs", "rewards"]

packages, package_dir = [], {}
for top in TOP_LEVEL:
    package_dir[f"armflow.{top}"] = top
    packages.append(f"armflow.{top}")
    packages += [f"armflow.{top}.{sub}" for sub in find_packages(top)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={pkg: ["*.yaml", "**/*.yaml", "*.xml", "**/*.xml", "assets/**/*", "*.json"] for pkg in packages},
    include_package_data=True,
)
