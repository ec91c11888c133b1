# Helpers every generated kernel module starts with (the code generator copies this file
# in front of the kernels it writes).  Ops in evonorm_search/ops.py name them in their
# Triton expressions.
import triton
import triton.language as tl


@triton.jit
def _sign(a):
    # torch.sign: -1, 0 or 1, and NaN stays NaN (through the multiplication that follows).
    return tl.where(a > 0, 1.0, tl.where(a < 0, -1.0, 0.0)).to(a.dtype)


@triton.jit
def _tanh(a):
    # 2 * sigmoid(2a) - 1 cancels for small |a|: there an odd Taylor polynomial (error below
    # 1e-12 relative for |a| < 1/16) takes over.  libdevice's tanh fails in the interpreter.
    a2 = a * a
    poly = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0))))
    return tl.where(tl.abs(a) < 0.0625, poly, 2.0 * tl.sigmoid(2.0 * a) - 1.0)


@triton.jit
def _offsets_to_channel(offsets, C, S):
    return (offsets // S) % C


@triton.jit
def _merge_partials(
    part_ptr,
    out_ptr,
    ROWS,
    KIND: tl.constexpr,
    COMPUTE: tl.constexpr,
    SPLIT: tl.constexpr,
):
    # Chan's merge of SPLIT partial (count, mean, M2) of each row into its moment: 0 the
    # mean, 1 the biased variance, 2 the mean square.  Deterministic: no atomics.
    row = tl.program_id(0)
    k = tl.arange(0, SPLIT)
    n = tl.load(part_ptr + row * SPLIT + k).to(COMPUTE)
    mean = tl.load(part_ptr + (ROWS + row) * SPLIT + k).to(COMPUTE)
    m2 = tl.load(part_ptr + (2 * ROWS + row) * SPLIT + k).to(COMPUTE)
    total = tl.sum(n, axis=0)
    grand = tl.sum(n * mean, axis=0) / total
    d = mean - grand
    var = (tl.sum(m2, axis=0) + tl.sum(n * d * d, axis=0)) / total
    if KIND == 0:
        tl.store(out_ptr + row, grand)
    elif KIND == 1:
        tl.store(out_ptr + row, var)
    else:
        tl.store(out_ptr + row, var + grand * grand)
