"""Training throughput (examples/s): uniret's trainer against sentence-transformers'
``SentenceTransformerTrainer`` with the same model (all-MiniLM-L6-v2), loss (in-batch InfoNCE, temperature
0.05 = MultipleNegativesRankingLoss scale 20), batch size, max length, no-duplicate batches, on the same
SciFact (claim, abstract) training pairs, in one run. Model loading and data preparation are excluded;
the timed part is the training loop of ``--steps`` optimisation steps (after ``--warmup`` untimed steps
on each side). ``--mixed-precision bf16`` runs both sides under bfloat16 autocast with float32 master
weights (sentence-transformers through its ``bf16=True`` training argument, uniret through
``trainer.mixed_precision: bf16``); it pays off on CPUs with AVX512-BF16/AMX and on GPUs.

    python benchmarks/train_throughput.py --steps 12 --batch-size 32 --max-length 256
    python benchmarks/train_throughput.py --steps 12 --batch-size 32 --max-length 256 --mixed-precision bf16

``--uniret-attention-dropout 0`` builds uniret's model with ``model.attention_dropout: 0`` (fused attention
kernels in training) while sentence-transformers keeps the model's configured dropout, as its users get it:
that row compares recipes, not identical computations, and says so in its result.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _common import save_result
from uniret.assets import resolve_model
from uniret.data import load_beir
from uniret.runtime import native_bf16
from uniret.train.records import records_from_beir


def run_sentence_transformers(records, args) -> float:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = args.max_length
    ds = Dataset.from_dict({"anchor": [r.query for r in records], "positive": [r.positives[0] for r in records]})
    times: list[float] = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                times.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup + args.steps:
                times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
            learning_rate=2e-5, warmup_ratio=0.1, logging_steps=1000, save_strategy="no", report_to=[],
            batch_sampler=BatchSamplers.NO_DUPLICATES, dataloader_num_workers=0, use_cpu=True, seed=0,
            disable_tqdm=True, bf16=args.mixed_precision == "bf16")
        trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds,
                                             loss=MultipleNegativesRankingLoss(model, scale=20.0),
                                             callbacks=[Clock()])
        trainer.train()
    return args.steps * args.batch_size / (times[1] - times[0])


def run_uniret(records, args) -> float:
    from uniret.retriever.embedder import Embedder
    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.trainer import Callback, Trainer, TrainerConfig

    emb = Embedder.build("all-MiniLM-L6-v2", pooling="mean", normalize=True, max_length=args.max_length, device="cpu",
                         attention_dropout=args.uniret_attention_dropout)
    times: list[float] = []

    class Clock(Callback):
        def on_step_end(self, trainer, step, logs):
            if step in (args.warmup, args.warmup + args.steps):
                times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainerConfig(batch_size=args.batch_size, max_steps=args.warmup + args.steps, learning_rate=2e-5,
                            warmup_ratio=0.1, save_every=10**9, resume=False, log_every=1000,
                            mixed_precision=args.mixed_precision)
        Trainer(BiEncoderModule(emb, LossConfig(hard_negatives=0, temperature=0.05)), records, cfg, tmp,
                callbacks=[Clock()]).train()
    return args.steps * args.batch_size / (times[1] - times[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    ap.add_argument("--uniret-attention-dropout", type=float, default=None,
                    help="uniret side only: attention dropout override (default: the model's, as for ST)")
    ap.add_argument("--result", default="train_throughput", help="results file name (without .json)")
    args = ap.parse_args()
    torch.manual_seed(0)
    records = list(records_from_beir(load_beir("scifact"), "train"))
    st = run_sentence_transformers(records, args)
    print(f"sentence-transformers: {st:.2f} examples/s", flush=True)
    ours = run_uniret(records, args)
    print(f"uniret: {ours:.2f} examples/s", flush=True)
    result = {"model": "all-MiniLM-L6-v2", "steps": args.steps, "warmup_steps": args.warmup,
              "batch_size": args.batch_size, "max_length": args.max_length, "torch_threads": torch.get_num_threads(),
              "mixed_precision": args.mixed_precision, "cpu_native_bf16": native_bf16(),
              "uniret_attention_dropout": args.uniret_attention_dropout,
              "identical_computation": args.uniret_attention_dropout is None,
              "examples_per_s": {"sentence_transformers": st, "uniret": ours}, "ratio_uniret_over_st": ours / st}
    print(f"ratio {ours / st:.3f}; written to {save_result(args.result, result)}")


if __name__ == "__main__":
    main()
