"""retrieval_tf and its paper packages: TF2/Keras retrieval systems."""

import setuptools

INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    "absl-py",
    "numpy",
    "scipy",
]

EXTRAS = {
    # ANN peers for the benchmarks (ScaNN's TF ops break on TF 2.21).
    "bench": ["scann[tf]==1.4.2", "faiss-cpu", "hnswlib", "annoy",
              "matplotlib", "rank-bm25==0.2.2"],
    # tensorflow-serving-api: the REST -> PredictRequest check of servables.
    # rank-bm25: DPSR's BM25 baseline. hypothesis: the fuzz tests.
    # pytest-xdist: `make test` runs the suite's files on two workers.
    "dev": ["pytest", "pytest-xdist", "hypothesis", "scikit-learn",
            "scann[tf]==1.4.2", "faiss-cpu",
            "tensorflow-serving-api==2.20.*", "rank-bm25==0.2.2"],
}

setuptools.setup(
    name="retrieval-tf",
    version="0.1.0",
    description=("TF2/Keras reference implementations of industrial retrieval "
                 "systems (Poeem, Deep Retrieval, PDN, DPSR, MGDSPR)"),
    packages=setuptools.find_packages(
        include=["retrieval_tf", "retrieval_tf.*", "poeem_tf", "poeem_tf.*",
                 "dr_tf", "dr_tf.*", "pdn_tf", "pdn_tf.*", "dpsr_tf",
                 "dpsr_tf.*", "mgdspr_tf", "mgdspr_tf.*"]),
    python_requires=">=3.10,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "retrieval-tf-train=retrieval_tf.train:run_main",
            "retrieval-tf-check=retrieval_tf.serving.check:run_main",
            "poeem-train=poeem_tf.train:run_main",
            "dr-train=dr_tf.train:run_main",
            "pdn-train=pdn_tf.train:run_main",
            "dpsr-train=dpsr_tf.train:run_main",
            "mgdspr-train=mgdspr_tf.train:run_main",
        ],
    },
)
