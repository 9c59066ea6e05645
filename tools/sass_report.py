#!/usr/bin/env python3
"""The main loop of every tensor-core instantiation of the hand-written CUDA kernels, read from SASS.

    python3 tools/sass_report.py [--objs build/cuda-check] [--label NAME] [--csv bench/results/sass_mainloop.csv]
                                 [--compile] [--check]

(`make sass-report`: runs after `make cuda-check`, which leaves its objects in build/cuda-check.)
Per kernel with HMMA in its SASS (sm_80 and sm_90 from the same fat object): the main loop is the
innermost backward-branch body that holds HMMAs; the row gives its static instruction count, HMMAs,
instructions per HMMA, the HMMA share, the loads/barriers/integer ops in it, and the kernel's
registers, spill instructions (STL/LDL in its SASS), stack and local bytes, static + dynamic shared memory, threads and
CTAs per SM (registers, shared memory and warps limits of sm_80/sm_90). Rows carry a label ("baseline",
"mask-template", ...): a run replaces its label's rows and keeps the others, so before/after rows
of a kernel change sit side by side in the committed CSV. --check fails on any spill in a
tensor-core instantiation. No GPU; cuobjdump comes from the pip wheel (installed --no-deps when
missing, as for make sm90-check). --compile (re)builds missing or outdated objects with cuda-check's nvcc flags.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import os
import re
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import sm90_check  # noqa: E402  (the pinned cuobjdump/nvdisasm wheels)

# The translation units holding tensor-core kernels (the implicit-GEMM family).
SOURCES = ("csrc/cuda/conv2d_kernel.cu", "csrc/cuda/conv1x1_kernel.cu")
# make cuda-check's flags (tools/cuda_check.sh).
NVCC_FLAGS = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Icsrc", "-Xcompiler", "-Wall",
              "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
# Per-SM limits: registers, shared memory usable by CTAs (bytes), max warps, max CTAs, reserved
# shared memory per CTA (CUDA occupancy calculator's numbers).
SM_LIMITS = {"sm_80": (65536, 167936, 64, 32, 1024), "sm_90": (65536, 233472, 64, 32, 1024)}

INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH = re.compile(r"\bBRA(?:\.[A-Z.]+)?\s+(?:[^;]*?,\s*)?(0x[0-9a-f]+)")
INT_OPS = ("IMAD", "IADD3", "LEA", "SHF", "LOP3", "ISETP", "SEL", "MOV", "IABS", "PRMT", "S2R", "S2UR", "SHL",
           "SHR", "IMNMX", "PLOP3", "P2R", "R2P", "UIADD3", "UIMAD", "ULEA", "USHF", "ULOP3", "UMOV", "USEL",
           "UISETP", "ULDC", "R2UR", "IMUL", "VIADD", "VIMNMX", "UPRMT", "USHL")


def opcode(text: str) -> str:
    t = text.split()
    if t and t[0].startswith("@"):
        t = t[1:]
    return t[0] if t else ""


def parse_sass(text: str) -> dict:
    """{(arch, mangled): [(addr, opcode, text), ...]} from cuobjdump -sass."""
    out, arch, cur = {}, None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (sm_\d+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = out.setdefault((arch, m.group(1)), [])
            continue
        m = INSN.match(line)
        if m and cur is not None:
            cur.append((int(m.group(1), 16), opcode(m.group(2)), m.group(2)))
    return out


def parse_res_usage(text: str) -> dict:
    """{(arch, mangled): {REG, SHARED, LOCAL, STACK}} from cuobjdump -res-usage."""
    out, arch, cur = {}, None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (sm_\d+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        if cur and "REG:" in line:
            out[(arch, cur)] = {k: int(v) for k, v in re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", line)}
            cur = None
    return out


def main_loops(insns: list) -> list:
    """The innermost loops (backward branches) whose bodies hold HMMAs: [(start, end)] by address."""
    loops = []
    for addr, op, text in insns:
        if op.startswith("BRA"):
            m = BRANCH.search(text)
            if m and int(m.group(1), 16) <= addr:
                loops.append((int(m.group(1), 16), addr))
    hmma_addrs = [a for a, op, _ in insns if op.startswith("HMMA")]
    with_mma = [(s, e) for s, e in set(loops) if any(s <= a <= e for a in hmma_addrs)]
    inner = [(s, e) for s, e in with_mma
             if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in with_mma)]
    return sorted(inner)


def loop_stats(insns: list, start: int, end: int) -> dict:
    body = [(op, text) for a, op, text in insns if start <= a <= end]
    ops = [op.split(".")[0] for op, _ in body]
    n = len(body)
    hmma = ops.count("HMMA")
    return {"loop_instructions": n, "hmma": hmma,
            "instr_per_hmma": f"{n / hmma:.2f}" if hmma else "",
            "hmma_pct": f"{100.0 * hmma / n:.1f}" if n else "",
            "ldsm": ops.count("LDSM"), "ldgsts": ops.count("LDGSTS"), "lds": ops.count("LDS"),
            "sts": ops.count("STS"), "ldg": ops.count("LDG"), "bar": ops.count("BAR"),
            "int_ops": sum(ops.count(k) for k in INT_OPS), "s2r": ops.count("S2R"),
            "loop_spill_ops": ops.count("STL") + ops.count("LDL")}


def demangle(names: list) -> dict:
    p = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return dict(zip(names, p.stdout.splitlines()))


def cfg_aliases() -> dict:
    """'TcCfg<128, 128, 64, 32, 4, 2>' -> 'TcL', from the `using` lines of igemm_common.cuh."""
    text = open(os.path.join(REPO, "csrc", "cuda", "igemm_common.cuh")).read()
    out = {}
    for name, tmpl, args in re.findall(r"using (\w+) = (\w+)<([\d, ]+)>;", text):
        nums = [a.strip() for a in args.split(",")]
        if tmpl in ("TcCfg", "SimtCfg") and len(nums) == 5:
            nums.append("1")  # MIN_BLOCKS_'s default: the demangled name spells it out
        out[f"{tmpl}<{', '.join(nums)}>"] = name
    return out


DTYPES = {"__nv_bfloat16": "bf16", "__half": "fp16", "float": "fp32", "double": "fp64"}


def describe(demangled: str, aliases: dict) -> dict | None:
    """kernel, dtype, tile, template flags from a demangled conv_kmajor/conv_wgrad kernel name."""
    m = re.search(r"(conv_kmajor_kernel|conv_wgrad_kernel)<(.*)>\(", demangled)
    if not m:
        return None
    args = [a.strip() for a in re.split(r",(?![^<]*>)", m.group(2))]
    cfg = re.sub(r"^.*::", "", args[1])
    nums = [int(x) for x in re.findall(r"-?\d+", cfg.split("<", 1)[1])] if "<" in cfg else []
    d = {"kernel": m.group(1), "dtype": DTYPES.get(args[0], args[0]), "tile": aliases.get(cfg, cfg),
         "cfg": nums, "flags": ",".join("1" if a == "true" else "0" if a == "false" else a for a in args[2:])}
    return d


def threads_and_smem(d: dict) -> tuple:
    """Threads per CTA and dynamic shared memory (bytes; without, with the ReLU-mask stages).
    Mirrors kmajor_smem_bytes (igemm_fprop.cuh) and wgrad_smem_bytes (igemm_wgrad.cuh)."""
    esize = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}[d["dtype"]]
    if d["kernel"] == "conv_kmajor_kernel":
        BM, BN, WM, WN, STAGES = d["cfg"][:5]
        threads = 32 * (BM // WM) * (BN // WN)
        acc = 8 if esize == 8 else 4

        def kmajor(mask):
            pipe = STAGES * (BM + BN + (BM if mask else 0)) * 64
            ctile = max(BM * (BN + 8), BN * (BM + 8)) * acc
            return max(pipe, ctile) + 2 * BM * 8
        return threads, kmajor(False), kmajor(True)
    BM, BN, WM, WN, BKP, STAGES = d["cfg"][:6]
    threads = 32 * (BM // WM) * (BN // WN)
    return threads, STAGES * BKP * (BM + BN) * esize, STAGES * BKP * (2 * BM + BN) * esize


def ctas_per_sm(arch: str, regs: int, threads: int, smem: int) -> int:
    reg_sm, smem_sm, warps_sm, ctas_sm, reserved = SM_LIMITS[arch]
    warps = (threads + 31) // 32
    per_warp = ((max(regs, 1) * 32 + 255) // 256) * 256
    by_regs = reg_sm // (per_warp * warps)
    by_smem = smem_sm // (smem + reserved) if smem + reserved > 0 else ctas_sm
    return max(0, min(ctas_sm, warps_sm // warps, by_regs, by_smem))


def compile_missing(objs: str) -> None:
    """(Re)compile the objects that are missing or older than a CUDA source or header."""
    os.makedirs(objs, exist_ok=True)
    newest = max(os.path.getmtime(p) for p in glob.glob(os.path.join(REPO, "csrc", "cuda", "*.cu*")) +
                 glob.glob(os.path.join(REPO, "csrc", "cuda", "*.h")))
    for src in SOURCES:
        obj = os.path.join(objs, os.path.basename(src).replace(".cu", ".o"))
        if not os.path.exists(obj) or os.path.getmtime(obj) < newest:
            print(f"+ nvcc {src}", flush=True)
            subprocess.run([os.environ.get("NVCC", "nvcc"), *NVCC_FLAGS, "-c", src, "-o", obj], cwd=REPO, check=True)


def report(objs: str, label: str, bindir: str) -> list:
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    aliases = cfg_aliases()
    rows = []
    for src in SOURCES:
        obj = os.path.join(objs, os.path.basename(src).replace(".cu", ".o"))
        if not os.path.exists(obj):
            raise SystemExit(f"sass-report: {obj} is missing (run make cuda-check, or pass --compile)")
        sass = parse_sass(subprocess.run(["cuobjdump", "-sass", obj], capture_output=True, text=True, env=env,
                                         check=True).stdout)
        res = parse_res_usage(subprocess.run(["cuobjdump", "-res-usage", obj], capture_output=True, text=True,
                                             env=env, check=True).stdout)
        names = demangle(sorted({fn for _, fn in sass}))
        for (arch, fn), insns in sorted(sass.items()):
            if not any(op.startswith("HMMA") for _, op, _ in insns):
                continue
            d = describe(names[fn], aliases)
            if d is None:
                raise SystemExit(f"sass-report: a tensor-core kernel it cannot name: {names[fn]}")
            ru = res.get((arch, fn), {})
            threads, smem0, smem1 = threads_and_smem(d)
            spill_ops = sum(1 for _, op, _ in insns if op.split(".")[0] in ("STL", "LDL"))
            loops = main_loops(insns)
            for li, (s, e) in enumerate(loops or [(-1, -1)]):
                st = loop_stats(insns, s, e) if s >= 0 else {}
                flags = d["flags"].split(",")
                if d["kernel"] == "conv_kmajor_kernel" and len(flags) == 3:  # <kVecA, k1x1, kMask>
                    variants = [("template", int(flags[2]), smem1 if flags[2] == "1" else smem0)]
                else:  # a run-time mask: one loop for both, the mask's stages only in its shared memory
                    variants = [("runtime", 0, smem0), ("runtime", 1, smem1)]
                for mask_kind, mask, smem in variants:
                    regs = ru.get("REG", 0)
                    rows.append({"label": label, "arch": arch, "file": os.path.basename(src), "kernel": d["kernel"],
                                 "dtype": d["dtype"], "tile": d["tile"], "flags": d["flags"],
                                 "mask": mask, "mask_kind": mask_kind, "loop": f"{li}/{len(loops)}", **st,
                                 "kernel_instructions": len(insns), "registers": regs,
                                 "spill_ops": spill_ops, "stack_bytes": ru.get("STACK", 0),
                                 "local_bytes": ru.get("LOCAL", 0),
                                 "smem_static": ru.get("SHARED", 0), "smem_dynamic": smem, "threads": threads,
                                 "ctas_per_sm": ctas_per_sm(arch, regs, threads, smem + ru.get("SHARED", 0)),
                                 "mangled": fn})
    return rows


COLS = ["label", "arch", "file", "kernel", "dtype", "tile", "flags", "mask", "mask_kind", "loop", "loop_instructions",
        "hmma", "instr_per_hmma", "hmma_pct", "ldsm", "ldgsts", "lds", "sts", "ldg", "bar", "int_ops", "s2r",
        "loop_spill_ops", "kernel_instructions", "registers", "spill_ops", "stack_bytes", "local_bytes", "smem_static",
        "smem_dynamic", "threads", "ctas_per_sm", "mangled", "git_sha", "timestamp"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objs", default=os.path.join(REPO, "build", "cuda-check"))
    ap.add_argument("--csv", default=os.path.join(REPO, "bench", "results", "sass_mainloop.csv"))
    ap.add_argument("--label", default="current")
    ap.add_argument("--compile", action="store_true", help="compile missing objects (cuda-check's flags)")
    ap.add_argument("--check", action="store_true", help="fail on spills in a tensor-core instantiation")
    ap.add_argument("--no-install", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.compile:
        compile_missing(args.objs)
    rows = report(args.objs, args.label, sm90_check.sass_tools(not args.no_install))
    stamp = {"git_sha": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip(),
             "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    rows = [{**r, **stamp} for r in rows]
    kept = []
    if os.path.exists(args.csv):
        with open(args.csv, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["label"] != args.label]
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS, extrasaction="ignore")
        w.writeheader()
        w.writerows(kept + rows)
    print(f"{'arch':5s} {'kernel':18s} {'dtype':4s} {'tile':6s} {'flags':7s} m {'loop':4s} {'insn':>5s} "
          f"{'HMMA':>4s} {'i/H':>6s} {'H%':>5s} {'regs':>4s} {'spill':>5s} {'smem':>6s} CTA/SM")
    for r in rows:
        print(f"{r['arch']:5s} {r['kernel'][:18]:18s} {r['dtype']:4s} {r['tile']:6s} {r['flags']:7s} {r['mask']} "
              f"{r['loop']:4s} {r.get('loop_instructions', ''):>5} {r.get('hmma', ''):>4} "
              f"{r.get('instr_per_hmma', ''):>6} {r.get('hmma_pct', ''):>5} {r['registers']:4d} "
              f"{r['spill_ops']:5d} {r['smem_dynamic'] + r['smem_static']:6d} {r['ctas_per_sm']}")
    bad = sorted({(r["arch"], r["kernel"], r["dtype"], r["tile"], r["flags"]) for r in rows if r["spill_ops"]})
    for b in bad:
        print("spills:", " ".join(b))
    ru = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    cpu = sum(u.ru_utime + u.ru_stime for u in ru)
    print(f"sass-report: {len(rows)} rows (label {args.label}) -> {os.path.relpath(args.csv, REPO)}; "
          f"{len(bad)} instantiations with spills (target 0); {time.time() - t0:.0f} s wall, {cpu:.0f} CPU-s")
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
