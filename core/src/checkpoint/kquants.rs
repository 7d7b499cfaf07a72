//! ggml's reference quantizers for the types of llama-quantize's `Q4_K_M` mix without an
//! importance matrix: `Q4_K` and `Q6_K` (super-blocks of 256 values), and the 32-value `Q5_0`
//! a `Q4_K` tensor falls back to when its rows are not whole super-blocks. Ported line by line
//! from `ggml-quants.c` (`quantize_row_q4_K_ref`, `make_qkx2_quants`, `quantize_row_q6_K_ref`,
//! `make_qx_quants`, `quantize_row_q5_0_ref`), in the same f32 operations and order — ggml-base
//! is compiled without FMA contraction, so each product and sum rounds as written — which makes
//! the blocks byte-identical (checked against llama.cpp's own `llama_model_quantize` output:
//! `tests/fixtures/gguf/*-q4_k_m.gguf`).

use half::f16;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;
const GROUP_MAX_EPS: f32 = 1e-15;

/// Bytes per block: `Q4_K` (d, dmin, 12 packed 6-bit scales/mins, 128 nibbles), `Q6_K` (128 low
/// nibbles, 64 bytes of high bits, 16 int8 scales, d), `Q5_0` (d, 32 high bits, 16 nibbles).
pub const Q4_K_BYTES: usize = 144;
pub const Q6_K_BYTES: usize = 210;
pub const Q5_0_BYTES: usize = 22;

/// ggml's `nearest_int`: round half to even through the float's mantissa (|x| < 2²²).
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

fn half(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

fn unhalf(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// `make_qkx2_quants(n, nmax, x, weights, L, &min, Laux, rmin, rdelta, nstep, use_mad = false)`:
/// the scale and (negated) minimum of an asymmetric grid that minimizes the weighted squared
/// error, searched over `nstep + 1` grid stretches.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    the_min: &mut f32,
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> f32 {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        *the_min = -min;
        return 0.0;
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min));
        l[i] = q.clamp(0, nmax) as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        *the_min = -min;
        return scale;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let (w, q) = (weights[i], q as f32);
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw = NULL)`: a symmetric scale minimizing the
/// x²-weighted squared error over 19 stretches of the grid; `L` holds `q + nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l[i] = (q + nmax) as i8;
        let (w, q) = (v * v, q as f32);
        sumlx += w * v * q;
        suml2 += w * q * q;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                l[i] = (nmax + nearest_int(iscale * v).clamp(-nmax, nmax - 1)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `Q4_K` blocks (`quantize_row_q4_K_ref`). `values.len()` must be a multiple of 256.
pub fn quantize_q4_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * Q4_K_BYTES);
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    for x in values.chunks_exact(QK_K) {
        let mut mins = [0f32; QK_K / 32];
        let mut scales = [0f32; QK_K / 32];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..QK_K / 32 {
            let sub = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for &v in sub {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(sub) {
                *w = av_x + v.abs();
            }
            scales[j] = make_qkx2_quants(
                15,
                sub,
                &weights,
                &mut l[32 * j..32 * j + 32],
                &mut mins[j],
                &mut laux,
                -1.0,
                0.1,
                20,
            );
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut packed = [0u8; 12];
        for j in 0..QK_K / 32 {
            // uint8_t conversions wrap, then MIN(63, ·).
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                packed[j] = ls;
                packed[j + 4] = lm;
            } else {
                packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                packed[j - 4] |= (ls >> 4) << 6;
                packed[j] |= (lm >> 4) << 6;
            }
        }
        let (d, dmin) = (half(max_scale / 63.0), half(max_min / 63.0));
        for j in 0..QK_K / 32 {
            let (sc, m) = scale_min_k4(j, &packed);
            let d = unhalf(d) * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = unhalf(dmin) * m as f32;
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&packed);
        for j in (0..QK_K).step_by(64) {
            for i in 0..32 {
                out.push(l[j + i] | (l[j + i + 32] << 4));
            }
        }
    }
    out
}

/// `Q6_K` blocks (`quantize_row_q6_K_ref`). `values.len()` must be a multiple of 256.
pub fn quantize_q6_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * Q6_K_BYTES);
    let mut l = [0i8; QK_K];
    for x in values.chunks_exact(QK_K) {
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ib in 0..QK_K / 16 {
            let scale =
                make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&[0u8; Q6_K_BYTES]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = half(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for (s, &scale) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * scale).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = unhalf(d) * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let (mut ql, mut qh) = ([0u8; QK_K / 2], [0u8; QK_K / 4]);
        let u = |i: usize| l[i] as u8;
        for (n, j) in (0..QK_K).step_by(128).enumerate() {
            for i in 0..32 {
                let (q1, q2, q3, q4) = (
                    u(j + i) & 0xF,
                    u(j + i + 32) & 0xF,
                    u(j + i + 64) & 0xF,
                    u(j + i + 96) & 0xF,
                );
                ql[64 * n + i] = q1 | (q3 << 4);
                ql[64 * n + i + 32] = q2 | (q4 << 4);
                qh[32 * n + i] = (u(j + i) >> 4)
                    | ((u(j + i + 32) >> 4) << 2)
                    | ((u(j + i + 64) >> 4) << 4)
                    | ((u(j + i + 96) >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// `Q5_0` blocks of 32 (`quantize_row_q5_0_ref`: `d = m / -16` with `m` the value of largest
/// magnitude, `min(31, trunc(x / d + 16.5))`, the fifth bits gathered in a u32).
pub fn quantize_q5_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * Q5_0_BYTES);
    for x in values.chunks_exact(32) {
        let d = super::gguf::largest_magnitude(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let xi0 = ((x[j] * id + 16.5) as i32).min(31) as u8;
            let xi1 = ((x[16 + j] * id + 16.5) as i32).min(31) as u8;
            qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
        }
        out.extend_from_slice(&half(d).to_le_bytes());
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (x, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.7, -8),
            (63.0, 63),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn blocks_have_ggmls_sizes_and_zeros_stay_zero() {
        let zeros = vec![0f32; 512];
        let q4 = quantize_q4_k(&zeros);
        assert_eq!(q4.len(), 2 * Q4_K_BYTES);
        assert!(q4.iter().all(|&b| b == 0));
        let q6 = quantize_q6_k(&zeros);
        assert_eq!(q6.len(), 2 * Q6_K_BYTES);
        assert!(q6.iter().all(|&b| b == 0));
        assert_eq!(quantize_q5_0(&zeros).len(), 16 * Q5_0_BYTES);
    }
}
