from setuptools import find_packages, setup

# Dependencies are pinned in requirements.txt and installed by scripts/setup_env.sh: fairseq-fixed must
# be built against the installed torch with --no-build-isolation, which install_requires cannot express.
setup(
    name="fairseq_ext",
    version="0.1.0",
    description="Train Large, Then Compress (Li et al., ICML 2020) as a fairseq plugin",
    packages=find_packages(include=["fairseq_ext", "fairseq_ext.*"]),
    python_requires=">=3.10",
    extras_require={"plots": ["matplotlib"], "significance": ["sacrebleu"]},
)
