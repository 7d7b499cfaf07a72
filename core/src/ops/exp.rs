//! SLEEF's `expf_u10` (the 1.0-ULP single-precision exp torch's CPU `Vectorized<float>::exp`
//! uses): one scalar port and an AVX-512 one that takes the same operations (each fused
//! multiply-add as the scalar one spells it, through f64), so the same bits for 16 lanes.

/// `fma` for f32 through f64 (the product is exact in f64; the sum rounds twice, which differs
/// from a true fused multiply-add only in rare ties).
#[inline(always)]
pub fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

#[inline(always)]
pub fn pow2i(q: i32) -> f32 {
    f32::from_bits((q.wrapping_add(0x7f) as u32) << 23)
}

const R_LN2F: f32 = std::f32::consts::LOG2_E;
#[allow(clippy::excessive_precision)] // SLEEF's constants, verbatim
const L2UF: f32 = 0.693_145_751_953_125;
#[allow(clippy::excessive_precision)]
const L2LF: f32 = 1.428_606_765_330_187e-6;
/// Round-half-even of `d · log2(e)` by adding 1.5 · 2^23 (exact for |x| < 2^22; larger |d| is
/// masked below).
const MAGIC: f32 = 12_582_912.0;
#[allow(clippy::excessive_precision)] // SLEEF's constants, verbatim
const POLY: [f32; 6] = [
    0.000_198_527_617_612_853_646_278_381,
    0.001_393_043_552_525_341_510_772_71,
    0.008_333_360_776_305_198_669_433_59,
    0.041_666_485_369_205_474_853_515_6,
    0.166_666_671_633_720_397_949_219,
    0.5,
];

/// SLEEF `xexpf`, scalar.
#[inline(always)]
pub fn expf_u10(d: f32) -> f32 {
    let t = d * R_LN2F + MAGIC;
    let qf = t - MAGIC;
    let q = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let mut s = fma32(qf, -L2UF, d);
    s = fma32(qf, -L2LF, s);
    let mut u = POLY[0];
    for &c in &POLY[1..] {
        u = fma32(u, s, c);
    }
    u = 1.0 + fma32(s * s, u, s);
    let h = q >> 1;
    u = u * pow2i(h) * pow2i(q.wrapping_sub(h));
    let u = if d < -104.0 { 0.0 } else { u };
    if d > 104.0 {
        f32::INFINITY
    } else {
        u
    }
}

/// 16 lanes' partial sums added as torch's vector reductions add them (lane i + lane i ^ s, for
/// s = 8, 4, 2, 1).
#[inline(always)]
pub fn lane_sum(mut acc: [f32; 16]) -> f32 {
    let mut s = 8;
    while s >= 1 {
        let prev = acc;
        for (i, a) in acc.iter_mut().enumerate() {
            *a = prev[i] + prev[i ^ s];
        }
        s /= 2;
    }
    acc[0]
}

/// Whether the CPU has the AVX-512 subset the vector code here (and the host attention) uses.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
pub use x86::{expf_u10_avx512, fma32_avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// [`fma32`] on 16 lanes: each half widened to f64, multiplied and added there, rounded back.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn fma32_avx512(a: __m512, b: __m512, c: __m512) -> __m512 {
        let lo = |x: __m512| _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        let hi = |x: __m512| {
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(x),
            )))
        };
        let l = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(lo(a), lo(b)), lo(c)));
        let h = _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(hi(a), hi(b)), hi(c)));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(_mm512_castps256_ps512(l)),
            _mm256_castps_pd(h),
        ))
    }

    /// [`expf_u10`] on 16 lanes: the same bits.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn expf_u10_avx512(d: __m512) -> __m512 {
        let set = _mm512_set1_ps;
        let t = _mm512_add_ps(_mm512_mul_ps(d, set(R_LN2F)), set(MAGIC));
        let qf = _mm512_sub_ps(t, set(MAGIC));
        let q = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B40_0000));
        let mut s = fma32_avx512(qf, set(-L2UF), d);
        s = fma32_avx512(qf, set(-L2LF), s);
        let mut u = set(POLY[0]);
        for &c in &POLY[1..] {
            u = fma32_avx512(u, s, set(c));
        }
        u = _mm512_add_ps(set(1.0), fma32_avx512(_mm512_mul_ps(s, s), u, s));
        let h = _mm512_srai_epi32::<1>(q);
        let pow2 = |q: __m512i| {
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                q,
                _mm512_set1_epi32(0x7f),
            )))
        };
        u = _mm512_mul_ps(_mm512_mul_ps(u, pow2(h)), pow2(_mm512_sub_epi32(q, h)));
        let low = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d, set(-104.0));
        let u = _mm512_mask_mov_ps(u, low, _mm512_setzero_ps());
        let high = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, set(104.0));
        _mm512_mask_mov_ps(u, high, set(f32::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    /// 16 lanes give the scalar port's bits, over the whole range (overflow, underflow, NaN,
    /// infinities, subnormal results, ties of the rounding to an integer).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_is_the_scalar_port() {
        use std::arch::x86_64::*;
        if !super::has_avx512() {
            eprintln!("no AVX-512: not exercised");
            return;
        }
        let mut x: Vec<f32> = (0..400_000)
            .map(|i| (i as f32 / 400_000.0 - 0.5) * 240.0)
            .collect();
        x.extend([
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -104.0,
            104.0,
            -103.99,
            88.7,
            -87.5,
            0.5 * std::f32::consts::LN_2,
            1e-30,
        ]);
        for i in 0..100_000u32 {
            x.push(f32::from_bits(i.wrapping_mul(2_654_435_761)));
        }
        while x.len() % 16 != 0 {
            x.push(1.0);
        }
        for chunk in x.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    super::expf_u10_avx512(_mm512_loadu_ps(chunk.as_ptr())),
                )
            };
            for (g, &d) in got.iter().zip(chunk) {
                let want = super::expf_u10(d);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp({d:e}): {g:e} vs {want:e}"
                );
            }
        }
        // And SLEEF's accuracy: within 1 ulp of f64's exp where the result is normal.
        for &d in x.iter().filter(|d| d.abs() < 80.0) {
            let (got, want) = (super::expf_u10(d) as f64, (d as f64).exp());
            assert!(((got - want) / want).abs() < 1.2e-7, "exp({d:e})");
        }
    }
}
