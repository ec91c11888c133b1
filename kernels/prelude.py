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
def _div(a, b):
    # IEEE division, as torch divides: triton's float32 `/` is an approximation on GPUs, and
    # div_rn takes float32 only (float64 `/` is exact).
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)
