"""The hot loops of the avx2 and avx512 kernels are vectorised (issue 16, item 1).

A compiler change, a new branch in an inner loop or a helper that stops inlining can turn
a vectorised loop back into scalar code without changing a single result: only the speed
drops (AVX2 machines ran a scalar exp for a while, unnoticed).  This test reads the
machine code of the installed extension instead of timing it: ``objdump -d`` on
``tiltlab/_core*.so``, for each hot kernel of each wide variant, found by its exported
symbol name (``tl_lse_chunk_f64_avx2``, ...), never by an instruction sequence.

For every such function (and the local helpers it calls) the control-flow graph is built
from the disassembly, its natural loops are found (back edges to a dominating block), and
in the innermost loops every floating-point arithmetic or compare instruction is weighed
by the elements it processes: a packed instruction on a ymm register does 4 doubles (8
floats), on a zmm register 8 (16), a scalar one 1.  Two checks:

* at least ``MIN_WIDE_SHARE`` of that work is done in full-width vectors (ymm or zmm);
* every innermost loop that runs a polynomial (``MIN_FMA_IN_POLY_LOOP`` or more fused
  multiply-adds: the exponential) runs it in full-width vectors.

Measured when written (gcc 12): the vectorised kernels do 85-100 % of their loop work in
ymm/zmm vectors and every polynomial loop is vectorised; the same kernels compiled with
``-fno-tree-vectorize`` do 0 %, and the test fails on them.  No timing is involved.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tiltlab import _core, simd

OBJDUMP = shutil.which("objdump")


def _is_x86_64_elf(path: str) -> bool:
    """The check reads GNU objdump's x86-64 ELF disassembly (Linux); Mach-O (macOS), PE
    (Windows) and other processors' code are out of its scope."""
    with open(path, "rb") as f:
        head = f.read(20)
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 62  # EM_X86_64


pytestmark = [
    pytest.mark.skipif(OBJDUMP is None, reason="objdump (GNU binutils) is not installed"),
    pytest.mark.skipif(not _is_x86_64_elf(_core.__file__),
                       reason="the compiled core is not x86-64 ELF code"),
]

KERNELS = ["tl_lse_chunk", "tl_tilt_chunk", "tl_kl_chunk", "tl_moments_chunk", "tl_prescan",
           "tl_softmax_chunk", "tl_softmax_scale", "tl_log_softmax_write",
           "tl_cat_prepare", "tl_bon_draw_row"]
# kernels of double input only (no _f64/_f32 pair)
KERNELS_DOUBLE = ["tl_markov_backward"]
WIDE_VARIANTS = ["avx2", "avx512"]
MIN_WIDE_SHARE = 0.75
MIN_FMA_IN_POLY_LOOP = 6

# floating-point arithmetic and compares: v?(op)(p|s)(d|s), e.g. vfmadd231pd, vmulsd,
# vcmpltpd, vucomisd; the first group is the operation, then packed/scalar, double/single
_FP = re.compile(r"^v?(add|sub|mul|div|max|min|sqrt|fn?m(?:add|sub)\d{3}|u?comi|cmp[a-z_]*?)"
                 r"(p|s)(d|s)$")
_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S.*)$")
_PREFIXES = {"notrack", "bnd", "rep", "repz", "repnz", "repe", "repne", "lock", "data16",
             "cs", "ds", "es", "ss", "addr32"}
_TARGET = re.compile(r"^([0-9a-f]+)\b")
_ENDS = {"ret", "retq", "ud2", "hlt", "int3"}


def _extension() -> Path:
    return Path(_core.__file__)


@functools.cache
def _symbols(path: str) -> dict:
    """Exported functions of the shared object: name -> (address, size)."""
    out = subprocess.run([OBJDUMP, "-T", path], capture_output=True, text=True,
                         check=True).stdout
    syms = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) >= 6 and "DF" in p and ".text" in p:
            try:
                syms[p[-1]] = (int(p[0], 16), int(p[p.index(".text") + 1], 16))
            except ValueError:
                continue
    return syms


def _disassemble(path: str, lo: int, hi: int) -> list:
    """[(address, mnemonic, operands)] of the machine code in [lo, hi)."""
    out = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", f"--start-address={lo}",
                          f"--stop-address={hi}", path], capture_output=True, text=True,
                         check=True).stdout
    code = []
    for line in out.splitlines():
        m = _INSN.match(line)
        if not m:
            continue
        words = m.group(2).split(None, 1)
        while len(words) == 2 and words[0] in _PREFIXES:
            words = words[1].split(None, 1)
        code.append((int(m.group(1), 16), words[0], words[1] if len(words) > 1 else ""))
    return code


def _weight(mnemonic: str, operands: str):
    """(elements processed, full width?) of a floating-point instruction; None otherwise."""
    m = _FP.match(mnemonic)
    if not m:
        return None
    if m.group(2) == "s" or m.group(1) in ("comi", "ucomi"):
        return 1, False
    bits = 512 if "%zmm" in operands else 256 if "%ymm" in operands else 128
    return bits // (64 if m.group(3) == "d" else 32), bits >= 256


def _direct_target(operands: str, code_addr: set):
    t = _TARGET.match(operands)
    if t and int(t.group(1), 16) in code_addr:
        return int(t.group(1), 16)
    return None


def _innermost_loops(code: list, extra_roots: bool) -> list:
    """Instruction index lists of the innermost natural loops of a function's code.

    With extra_roots, in a function with an indirect jump (a switch's jump table), the
    blocks that nothing jumps to directly are entries too, so that the loops of the
    switch's cases are found."""
    index = {a: i for i, (a, _, _) in enumerate(code)}
    addrs = set(index)
    leaders = {0}
    for i, (_, mn, ops) in enumerate(code):
        if mn.startswith("j"):
            t = _direct_target(ops, addrs)
            if t is not None:
                leaders.add(index[t])
            leaders.add(i + 1)
        elif mn in _ENDS:
            leaders.add(i + 1)
    starts = sorted(s for s in leaders if s < len(code))
    bounds = list(zip(starts, starts[1:] + [len(code)], strict=True))
    block_of = {s: k for k, (s, _) in enumerate(bounds)}
    n = len(bounds)
    succ: list[list[int]] = [[] for _ in range(n + 1)]  # n: a virtual root
    for k, (_, e) in enumerate(bounds):
        _, mn, ops = code[e - 1]
        if mn.startswith("j"):
            t = _direct_target(ops, addrs)
            if t is not None:
                succ[k].append(block_of[index[t]])
            if mn != "jmp" and k + 1 < n:
                succ[k].append(k + 1)
        elif mn not in _ENDS and k + 1 < n:
            succ[k].append(k + 1)
    pred: list[list[int]] = [[] for _ in range(n + 1)]
    for k in range(n):
        for s in succ[k]:
            pred[s].append(k)
    if extra_roots and any(mn == "jmp" and ops.startswith("*") for _, mn, ops in code):
        # a jump table: the blocks nothing jumps to directly are its targets (or padding)
        succ[n] = [0] + [k for k in range(1, n) if not pred[k] and not all(
            code[i][1].startswith("nop") for i in range(*bounds[k]))]
    else:
        succ[n] = [0]
    for s in succ[n]:
        pred[s].append(n)
    # reachable blocks in reverse post-order from the root
    order, seen, stack = [], {n}, [(n, iter(succ[n]))]
    while stack:
        node, it = stack[-1]
        nxt = next((s for s in it if s not in seen), None)
        if nxt is None:
            order.append(node)
            stack.pop()
        else:
            seen.add(nxt)
            stack.append((nxt, iter(succ[nxt])))
    order.reverse()
    # dominators (bit sets), iterated to the fixed point
    everything = (1 << (n + 1)) - 1
    dom = {k: everything for k in order}
    dom[n] = 1 << n
    changed = True
    while changed:
        changed = False
        for k in order[1:]:
            d = everything
            for p in pred[k]:
                if p in dom:
                    d &= dom[p]
            d |= 1 << k
            if d != dom[k]:
                dom[k], changed = d, True
    bodies: dict[int, set] = {}
    for u in order:
        for h in succ[u]:
            if u != n and dom[u] >> h & 1:  # back edge u -> h
                body = bodies.setdefault(h, {h})
                stack2 = [u]
                while stack2:
                    x = stack2.pop()
                    if x not in body:
                        body.add(x)
                        stack2.extend(p for p in pred[x] if p in dom and p != n)
    inner = [b for h, b in bodies.items() if not any(g != h and g in b for g in bodies)]
    return [[i for k in sorted(b) for i in range(*bounds[k])] for b in inner]


@functools.cache
def loop_profile(path: str, name: str) -> dict:
    """Floating-point work in the innermost loops of function `name` and of the local
    (unexported) functions it calls directly."""
    syms = _symbols(path)
    lo, size = syms[name]
    starts = sorted(a for a, _ in syms.values())
    code = _disassemble(path, lo, lo + size)
    pieces = [(code, True)]
    seen = set()
    for _, mn, ops in code:
        if mn.startswith("call") and "@plt" not in ops:
            t = _TARGET.match(ops)
            target = int(t.group(1), 16) if t else None
            if target is None or target in seen or target in starts or lo <= target < lo + size:
                continue
            seen.add(target)
            nxt = min((s for s in starts if s > target), default=target + 4096)
            pieces.append((_disassemble(path, target, nxt), False))
    total = wide = 0
    poly_loops = []
    for piece, extra_roots in pieces:
        for body in _innermost_loops(piece, extra_roots):
            fma_all = fma_wide = 0
            for i in body:
                _, mn, ops = piece[i]
                w = _weight(mn, ops)
                if w is None:
                    continue
                total += w[0]
                wide += w[0] if w[1] else 0
                if "fm" in mn or "fnm" in mn:
                    fma_all += 1
                    fma_wide += 1 if w[1] else 0
            if fma_all >= MIN_FMA_IN_POLY_LOOP:
                poly_loops.append((hex(piece[body[0]][0]), fma_all, fma_wide))
    return {"total": total, "wide": wide, "poly_loops": poly_loops}


def _cases():
    for variant in WIDE_VARIANTS:
        for kernel in KERNELS:
            for dtype in ("f64", "f32"):
                yield pytest.param(variant, f"{kernel}_{dtype}_{variant}",
                                   id=f"{kernel}_{dtype}-{variant}")
        for kernel in KERNELS_DOUBLE:
            yield pytest.param(variant, f"{kernel}_{variant}", id=f"{kernel}-{variant}")


@pytest.mark.parametrize(("variant", "symbol"), list(_cases()))
def test_hot_loops_are_vectorised(variant, symbol):
    if variant not in simd.compiled():
        pytest.skip(f"the {variant} variant is not compiled into this build")
    path = str(_extension())
    assert symbol in _symbols(path), (
        f"{symbol} is not an exported function of {path}: the check keys on these names")
    prof = loop_profile(path, symbol)
    assert prof["total"] > 0, f"{symbol}: no floating-point loop found in its disassembly"
    share = prof["wide"] / prof["total"]
    assert share >= MIN_WIDE_SHARE, (
        f"{symbol}: only {share:.0%} of the floating-point work in its innermost loops is "
        f"done in ymm/zmm vectors (at least {MIN_WIDE_SHARE:.0%} expected): a hot loop "
        f"stopped vectorising")
    scalar_poly = [loop for loop in prof["poly_loops"] if loop[2] < 0.75 * loop[1]]
    assert not scalar_poly, (
        f"{symbol}: polynomial loops (address, fused multiply-adds, of them in ymm/zmm) "
        f"not vectorised: {scalar_poly}")


def test_check_tells_scalar_code_apart():
    """The measure can fail: the portable (SSE2) build of the same kernels does none of
    its loop work in ymm/zmm vectors, while the loops themselves are found."""
    path = str(_extension())
    for kernel in ("tl_lse_chunk_f64", "tl_tilt_chunk_f64"):
        prof = loop_profile(path, f"{kernel}_portable")
        assert prof["total"] > 0
        assert prof["wide"] == 0
