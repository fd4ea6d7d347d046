# Instruction-set variant of this module's kernels (csrc/tl_isa.h).  Every extension
# module links its own copy of the dispatcher, so tiltlab.simd selects in all of them.

def isa_select(str name):
    """Use the kernels compiled for `name` ("auto", "portable", "avx2", "avx512").

    Returns 0, or -1 (unknown name), -2 (not compiled in) or -3 (the CPU lacks it)."""
    cdef bytes b = name.encode("ascii")
    return tl_isa_select(b)


def isa_active():
    """Name of the variant in use."""
    return tl_isa_name(tl_isa_active()).decode("ascii")


def isa_table():
    """(name, compiled, cpu_supports) for every variant, in order of preference."""
    return [(tl_isa_name(k).decode("ascii"), bool(tl_isa_compiled(k)),
             bool(tl_isa_cpu_supports(k))) for k in range(TL_ISA_COUNT)]


def isa_best():
    """The best variant that is compiled in and that this CPU runs."""
    return tl_isa_name(tl_isa_best()).decode("ascii")
