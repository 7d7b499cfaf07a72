//! Multi-head attention's core: `softmax(q kᵀ · scale + mask) v` over split heads, the decoding
//! cache's append, and the masks. On a GPU in f32 the kernels of [`crate::ops::gpu`] (reading
//! keys and values where they lie); for an encoder-decoder's decoding cache on the CPU, when the
//! weights are held on the host, host buffers and loops ([`HostKeysValues`]); elsewhere burn's
//! ops through [`crate::ops::fused`].

use crate::ops::int8::{split_jobs, SyncPtr};
use crate::ops::linear::{product_dtype, project3};
use crate::ops::Proj;
use burn::module::Module;
use burn::nn::Dropout;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

/// Multi-head attention's projections: queries, keys and values from the input, the heads'
/// output projected back (BART's `q_proj`…`out_proj`, T5's `q`…`o`: the names live in each
/// model's `params.rs`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    /// On the attention weights.
    pub dropout: Dropout,
    pub num_heads: usize,
    /// Multiplies the scores: BART `head_dim^-0.5`; T5 1 (folded into its initialization).
    pub scale: f64,
}

impl Attention {
    /// Projects `x` `[b, len, d]` to keys and values `[b, heads, len, head_dim]`.
    pub fn keys_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            split_heads(self.k.forward(x.clone()), self.num_heads),
            split_heads(self.v.forward(x), self.num_heads),
        )
    }

    /// Projects `x` `[b, len, d]` to queries `[b, len, inner]` and keys and values as
    /// [`Attention::keys_values`] (on a GPU, for a few rows, in one kernel: [`project3`]).
    pub fn queries_keys_values(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
        let [q, k, v] = project3(x, [&self.q, &self.k, &self.v]);
        let heads = self.num_heads;
        (q, split_heads(k, heads), split_heads(v, heads))
    }

    /// [`attention`] of `q(x)` over `k`/`v`, heads merged and projected by `o`. `x` has
    /// `group` consecutive rows per row of `k`/`v`/`mask` (the beams of one input attending to
    /// its encoder output).
    pub fn attend(
        &self,
        x: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        self.attend_queries(self.q.forward(x), k, v, mask, group)
    }

    /// [`Attention::attend`] given the projected queries `q(x)` `[rows, len, inner]`. Both
    /// products run in the projections' precision ([`crate::models::Model::hold_matrices_in`]).
    pub fn attend_queries(
        &self,
        q: Tensor<3>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        let dtype = product_dtype(&self.q.linear.weight.val());
        let out = attention(
            q,
            k,
            v,
            mask,
            self.num_heads,
            group,
            self.scale,
            dtype,
            &self.dropout,
        );
        self.o.forward(out)
    }
}

impl Attention {
    /// Whether this attention's weights are held on the host for the CPU's own products
    /// ([`Proj::host`]): its decoding cache is then held on the host too ([`KeysValues::Host`]).
    pub fn on_host(&self) -> bool {
        self.q.host.is_some()
    }

    /// [`Attention::keys_values`] as a decoding cache's entry: on the host when
    /// [`Attention::on_host`].
    pub fn cached_keys_values(&self, x: Tensor<3>) -> KeysValues {
        let (k, v) = self.keys_values(x);
        KeysValues::new(k, v, self.on_host())
    }

    /// [`Attention::attend`] over cached keys and values.
    pub fn attend_cached(
        &self,
        x: Tensor<3>,
        kv: &KeysValues,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        self.attend_queries_cached(self.q.forward(x), kv, mask, group)
    }

    /// [`Attention::attend_queries`] over cached keys and values.
    pub fn attend_queries_cached(
        &self,
        q: Tensor<3>,
        kv: &KeysValues,
        mask: Option<&Tensor<4>>,
        group: usize,
    ) -> Tensor<3> {
        match kv {
            KeysValues::Tensors(k, v) => self.attend_queries(q, k, v, mask, group),
            KeysValues::Host(kv) => {
                let out = kv.attention(q, mask, group, self.scale, kv.heads);
                self.o.forward(out)
            }
        }
    }
}

/// Keys and values of a decoding cache, `[n, heads, len, head_dim]`: burn tensors, or — on the
/// CPU with the weights held on the host — host buffers ([`HostKeysValues`]).
#[derive(Debug, Clone)]
pub enum KeysValues {
    Tensors(Tensor<4>, Tensor<4>),
    Host(HostKeysValues),
}

impl KeysValues {
    /// `k`, `v` `[n, heads, len, head_dim]`, moved to host buffers when `host`.
    pub fn new(k: Tensor<4>, v: Tensor<4>, host: bool) -> Self {
        if host {
            KeysValues::Host(HostKeysValues::new(k, v))
        } else {
            KeysValues::Tensors(k, v)
        }
    }

    /// `prev` with `k`, `v` `[n, heads, new, head_dim]` appended along the length axis (the
    /// first step: `k`, `v` themselves, held like [`KeysValues::new`]).
    pub fn append(prev: Option<KeysValues>, k: Tensor<4>, v: Tensor<4>, host: bool) -> Self {
        match prev {
            None => KeysValues::new(k, v, host),
            Some(KeysValues::Tensors(pk, pv)) => {
                let (k, v) = append_keys_values(pk, k, pv, v);
                KeysValues::Tensors(k, v)
            }
            Some(KeysValues::Host(mut kv)) => {
                kv.append(k, v);
                KeysValues::Host(kv)
            }
        }
    }

    /// Host-held ([`KeysValues::Host`]) only: `softmax(q kᵀ · scale + mask) v` of queries `q`
    /// `[rows, len, q_heads · hd]` (`group` rows per cached row; `q_heads` a multiple of the
    /// cached heads, cached head j serving query heads j·g .. (j + 1)·g) → `[rows, len, q_heads ·
    /// hd]`, heads merged; `None` for tensors.
    pub fn host_attention(
        &self,
        q: Tensor<3>,
        mask: Option<&Tensor<4>>,
        group: usize,
        scale: f64,
        q_heads: usize,
    ) -> Option<Tensor<3>> {
        match self {
            KeysValues::Host(kv) => Some(kv.attention(q, mask, group, scale, q_heads)),
            KeysValues::Tensors(..) => None,
        }
    }

    /// Row `i` continues row `index[i]`.
    pub fn reorder(self, src: &[usize], device: &Device) -> Self {
        match self {
            KeysValues::Tensors(k, v) => {
                let index: Vec<i64> = src.iter().map(|&i| i as i64).collect();
                let index =
                    Tensor::<1, Int>::from_data(TensorData::new(index, [src.len()]), device);
                KeysValues::Tensors(k.select(0, index.clone()), v.select(0, index))
            }
            KeysValues::Host(mut kv) => {
                kv.reorder(src);
                KeysValues::Host(kv)
            }
        }
    }
}

/// A decoding cache's keys and values on the host, per row in one growing buffer each (a step
/// appends in place; the keys `[heads][capacity / 16][head_dim][16]`, 16 keys side by side so
/// that their scores are one vector of fused multiply-adds and a block of them one contiguous
/// run of memory (see [`host_head::key_at`]); the values `[heads][capacity][head_dim]`: one
/// head's keys and values each contiguous, so that the rows sharing them — the beams of one input
/// over the encoder's keys — find them in the core's cache, where a `[len][heads][head_dim]`
/// layout put a head's values at a 4 KiB stride that used a sixteenth of its sets), shared
/// between rows after a beam reorder until one of them appends (copy on write) — where burn's
/// tensors copy the whole cache twice per step (`cat`, `select`). Attention over them runs on
/// the host, split over the [`crate::ops::int8::Parallel`] runner by input.
#[derive(Debug, Clone)]
pub struct HostKeysValues {
    heads: usize,
    head_dim: usize,
    len: usize,
    /// Keys each row's key buffer has room for.
    capacity: usize,
    keys: Vec<std::sync::Arc<Vec<f32>>>,
    values: Vec<std::sync::Arc<Vec<f32>>>,
}

impl HostKeysValues {
    fn new(k: Tensor<4>, v: Tensor<4>) -> Self {
        let [n, heads, _, head_dim] = k.dims();
        let mut kv = HostKeysValues {
            heads,
            head_dim,
            len: 0,
            capacity: 0,
            keys: (0..n).map(|_| Default::default()).collect(),
            values: (0..n).map(|_| Default::default()).collect(),
        };
        kv.append(k, v);
        kv
    }

    /// Keys/values per row.
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn append(&mut self, k: Tensor<4>, v: Tensor<4>) {
        let [n, heads, new, head_dim] = k.dims();
        assert_eq!(
            (n, heads, head_dim),
            (self.keys.len(), self.heads, self.head_dim),
            "appended keys' shape"
        );
        let (width, len) = (self.width(), self.len);
        if len + new > self.capacity {
            // Room for twice as many keys: every row's buffer laid out anew.
            let capacity = (len + new).max(2 * self.capacity).next_multiple_of(LANES);
            let old = self.capacity;
            // A head's blocks of 16 keys keep their layout: the used ones copied.
            let used = len.div_ceil(LANES) * LANES * head_dim;
            for row in &mut self.keys {
                let mut grown = vec![0f32; width * capacity];
                for (to, from) in grown
                    .chunks_exact_mut(capacity * head_dim)
                    .zip(row.chunks_exact((old * head_dim).max(1)))
                {
                    to[..used].copy_from_slice(&from[..used]);
                }
                *row = std::sync::Arc::new(grown);
            }
            for row in &mut self.values {
                let mut grown = vec![0f32; width * capacity];
                for (to, from) in grown
                    .chunks_exact_mut(capacity * head_dim)
                    .zip(row.chunks_exact((old * head_dim).max(1)))
                {
                    to[..len * head_dim].copy_from_slice(&from[..len * head_dim]);
                }
                *row = std::sync::Arc::new(grown);
            }
            self.capacity = capacity;
        }
        let capacity = self.capacity;
        // Each row's keys and values written on the host's threads (rows shared since a beam
        // reorder are copied first: copy on write).
        let (keys, values) = (
            SyncPtr(self.keys.as_mut_ptr()),
            SyncPtr(self.values.as_mut_ptr()),
        );
        let (keys, values) = (&keys, &values);
        crate::ops::linear::with_host_values(k, |k| {
            crate::ops::linear::with_host_values(v, |v| {
                split_jobs(n, 1, n * new * width >= 1 << 14, &|rows| {
                    for r in rows {
                        // SAFETY: row r's handles (the vectors outlive the jobs), disjoint
                        // between jobs.
                        let (krow, vrow) = unsafe { (&mut *keys.0.add(r), &mut *values.0.add(r)) };
                        // Keys [n, heads, new, hd]: key p of head h, dimension d at h·hd·capacity
                        // + key_at(hd, d, len + p).
                        let part = &k[r * new * width..][..new * width];
                        let row = std::sync::Arc::make_mut(krow);
                        for h in 0..heads {
                            for p in 0..new {
                                let key = &part[(h * new + p) * head_dim..][..head_dim];
                                for (d, &x) in key.iter().enumerate() {
                                    let at = host_head::key_at(head_dim, d, len + p);
                                    row[h * head_dim * capacity + at] = x;
                                }
                            }
                        }
                        // Values [n, heads, new, hd]: position p of head h at (h·capacity + len
                        // + p)·hd.
                        let part = &v[r * new * width..][..new * width];
                        let row = std::sync::Arc::make_mut(vrow);
                        for (h, part) in part.chunks_exact(new * head_dim).enumerate() {
                            row[(h * capacity + len) * head_dim..][..new * head_dim]
                                .copy_from_slice(part);
                        }
                    }
                });
            })
        });
        self.len += new;
    }

    fn reorder(&mut self, src: &[usize]) {
        let take =
            |rows: &Vec<std::sync::Arc<Vec<f32>>>| src.iter().map(|&s| rows[s].clone()).collect();
        self.keys = take(&self.keys);
        self.values = take(&self.values);
    }

    /// `softmax(q kᵀ · scale + mask) v`, heads merged: queries `q` `[rows, len, q_heads · hd]`
    /// with `group` consecutive rows per cached row and `q_heads` a multiple of the cached heads
    /// (grouped-query attention: cached head j serves query heads j·g .. (j + 1)·g), additive
    /// `mask` broadcastable to `[cached rows, q_heads, len, keys]` → `[rows, len, q_heads · hd]`
    /// (as [`attention`] in f32: the queries scaled first; the order of the sums: [`host_head`]).
    /// Split over the [`crate::ops::int8::Parallel`] runner by cached row and head.
    fn attention(
        &self,
        q: Tensor<3>,
        mask: Option<&Tensor<4>>,
        group: usize,
        scale: f64,
        q_heads: usize,
    ) -> Tensor<3> {
        let [rows, len, width] = q.dims();
        assert!(
            q_heads.is_multiple_of(self.heads),
            "query heads per cached head"
        );
        assert_eq!(width, q_heads * self.head_dim, "query width");
        assert_eq!(rows, self.keys.len() * group, "rows per cached row");
        let device = q.device();
        let q: Vec<f32> = crate::ops::linear::with_host_values(q, |q| {
            q.iter().map(|&x| x * scale as f32).collect()
        });
        let mask = mask.map(|m| {
            let dims = m.dims();
            assert_eq!(dims[3], self.len, "mask length");
            let data = m.clone().into_data().convert::<f32>();
            (dims, data.try_to_vec::<f32>().expect("f32 mask"))
        });
        let mut out = vec![0f32; rows * len * width];
        let (cached, heads) = (self.keys.len(), self.heads);
        let out_ptr = &SyncPtr(out.as_mut_ptr());
        let shape = Shape {
            group,
            len,
            q_heads,
        };
        split_jobs(cached * heads, 1, true, &|items| {
            for item in items {
                let (b, h) = (item / heads, item % heads);
                let q = &q[b * group * len * width..][..group * len * width];
                // SAFETY: `out` outlives the jobs and holds cached row b's rows' outputs from
                // there; item (b, h) writes only those of the query heads cached head h serves,
                // disjoint between items.
                unsafe {
                    let out = out_ptr.0.add(b * group * len * width);
                    self.attend_head(b, h, q, mask.as_ref(), shape, out)
                }
            }
        });
        Tensor::from_data(TensorData::new(out, [rows, len, width]), &device)
    }

    /// The queries of cached row `b` (`group · len` rows of them) that cached head `h` serves,
    /// over its keys and values; `q` and `out` that row's `[group · len, q_heads · hd]`. The
    /// queries sharing the head (the beams of one input, or a grouped-query attention's query
    /// heads) share each key and value loaded: up to four at a time.
    ///
    /// # Safety
    /// `out` must be valid for writes of that row's `group · len · q_heads · hd` outputs, those
    /// of the query heads `h` serves not accessed by anyone else meanwhile.
    #[allow(clippy::type_complexity)]
    unsafe fn attend_head(
        &self,
        b: usize,
        h: usize,
        q: &[f32],
        mask: Option<&([usize; 4], Vec<f32>)>,
        Shape {
            group,
            len,
            q_heads,
        }: Shape,
        out: *mut f32,
    ) {
        let (hd, keys, capacity) = (self.head_dim, self.len, self.capacity);
        let (width, per_head) = (q_heads * hd, q_heads / self.heads);
        let (k, v) = (&self.keys[b][..], &self.values[b][..]);
        let head = host_head::Head {
            k: &k[h * hd * capacity..][..hd * capacity],
            v: &v[h * hd * capacity..][..hd * capacity],
            width: hd,
        };
        let mut scores = vec![0f32; 4 * keys];
        let vector = hd % LANES == 0 && host_head::has_avx512();
        let mask_of = |qh: usize, i: usize| {
            mask.map(|([mb, mh, mq, mk], m)| {
                let pick = |n: usize, at: usize| if n == 1 { 0 } else { at };
                let at = (pick(*mb, b) * mh + pick(*mh, qh)) * mq + pick(*mq, i);
                &m[at * mk..][..keys]
            })
        };
        let per_head_mask = mask.is_some_and(|(dims, _)| dims[1] > 1);
        // The queries taken together, the same at every position: (first row, first query head,
        // queries, the stride between them).
        let mut runs: Vec<(usize, usize, usize, usize)> = Vec::new();
        if per_head == 1 {
            // The group's rows, head h: one mask for all.
            let mut g = 0;
            while g < group {
                let n = (group - g).min(4);
                runs.push((g, h, n, len * width));
                g += n;
            }
        } else {
            // Each row's query heads h·g .. (h + 1)·g, side by side.
            for g in 0..group {
                let mut qh = h * per_head;
                while qh < (h + 1) * per_head {
                    let n = if per_head_mask {
                        1
                    } else {
                        ((h + 1) * per_head - qh).min(4)
                    };
                    runs.push((g, qh, n, hd));
                    qh += n;
                }
            }
        }
        for i in 0..len {
            for &(g, qh, n, stride) in &runs {
                let row = (g * len + i) * width + qh * hd;
                // (the run's outputs: `n` queries at `stride`, within the row's, written only
                // here)
                let (q, o) = (&q[row..], unsafe { out.add(row) });
                let at = host_head::Queries {
                    q_stride: stride,
                    out_stride: stride,
                    hd,
                };
                let mask = mask_of(qh, i);
                let scores = &mut scores[..n * keys];
                if vector {
                    // SAFETY: AVX-512F + FMA checked (has_avx512); hd a multiple of 16; `o`
                    // valid for the run's outputs (this function's contract).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        match n {
                            4 => host_head::avx512::<4, 2>(q, head, mask, scores, o, at),
                            3 => host_head::avx512::<3, 2>(q, head, mask, scores, o, at),
                            2 => host_head::avx512::<2, 4>(q, head, mask, scores, o, at),
                            _ => host_head::avx512::<1, 4>(q, head, mask, scores, o, at),
                        }
                    }
                } else {
                    // SAFETY: as above.
                    unsafe {
                        match n {
                            4 => host_head::portable::<4>(q, head, mask, scores, o, at),
                            3 => host_head::portable::<3>(q, head, mask, scores, o, at),
                            2 => host_head::portable::<2>(q, head, mask, scores, o, at),
                            _ => host_head::portable::<1>(q, head, mask, scores, o, at),
                        }
                    }
                }
            }
        }
    }
}

/// How the queries of a host attention are laid out.
#[derive(Clone, Copy)]
struct Shape {
    /// Rows per cached row.
    group: usize,
    /// Queries per row.
    len: usize,
    /// Query heads (a multiple of the cached heads).
    q_heads: usize,
}

const LANES: usize = 16;

/// One query head over its keys and values, in one order for every path: each score fusing
/// `q[d] · k_j[d]` for `d` = 0, 1, … (from 0), then the mask added; the softmax `exp(s − max)`
/// (SLEEF's `expf_u10`, as torch's CPU softmax: [`crate::ops::exp`]) summed as torch's vector
/// code sums (key j into lane j mod 16 in key order, the lanes added in a tree), each weight
/// `e / Σ`; every output dimension fusing
/// `w_j · v_j[d]` in key order (from 0). The AVX-512 code (16 keys' scores, 16 dimensions of the
/// output per vector) and the portable code take these same operations: the same bits.
mod host_head {
    use super::LANES;

    /// Where dimension `d` of key `j` lies in a head's keys (`hd` dimensions): blocks of 16 keys
    /// `[hd][16]` one after the other.
    #[inline(always)]
    pub fn key_at(hd: usize, d: usize, j: usize) -> usize {
        (j / 16 * hd + d) * 16 + j % 16
    }

    /// One head's keys (`k[key_at(hd, d, j)]`: dimension `d` of key `j`, whole blocks of 16 keys)
    /// and values (`v[j · width + d]`).
    #[derive(Clone, Copy)]
    pub struct Head<'a> {
        pub k: &'a [f32],
        pub v: &'a [f32],
        pub width: usize,
    }

    pub use crate::ops::exp::has_avx512;

    /// The mask of the first `min(left, 16)` of 16 lanes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn first_lanes(left: usize) -> u16 {
        if left >= LANES {
            !0
        } else {
            (1u16 << left) - 1
        }
    }

    /// The mask added and the maximum (see the module's order).
    #[inline(always)]
    fn masked_max(scores: &mut [f32], mask: Option<&[f32]>) -> f32 {
        if let Some(m) = mask {
            for (s, &m) in scores.iter_mut().zip(m) {
                *s += m;
            }
        }
        scores.iter().fold(f32::NEG_INFINITY, |a, &s| a.max(s))
    }

    /// The mask added, the softmax of `scores` in place (see the module's order).
    #[inline(always)]
    fn softmax(scores: &mut [f32], mask: Option<&[f32]>) {
        let max = masked_max(scores, mask);
        let mut acc = [0f32; LANES];
        for (j, s) in scores.iter_mut().enumerate() {
            *s = crate::ops::exp::expf_u10(*s - max);
            acc[j % LANES] += *s;
        }
        let sum = crate::ops::exp::lane_sum(acc);
        for s in scores.iter_mut() {
            *s /= sum;
        }
    }

    /// [`softmax`] with 16-lane vectors: the same operations.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn softmax_avx512(scores: &mut [f32], mask: Option<&[f32]>) {
        use std::arch::x86_64::*;
        let max = _mm512_set1_ps(masked_max(scores, mask));
        let (n, p) = (scores.len(), scores.as_mut_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut j = 0;
        while j < n {
            let lanes = first_lanes(n - j);
            // SAFETY: values j..j + 16 of `scores` (fewer at the end: masked).
            let x = unsafe { _mm512_maskz_loadu_ps(lanes, p.add(j)) };
            let e = crate::ops::exp::expf_u10_avx512(_mm512_sub_ps(x, max));
            acc = _mm512_mask_add_ps(acc, lanes, acc, e);
            unsafe { _mm512_mask_storeu_ps(p.add(j), lanes, e) };
            j += LANES;
        }
        let acc = std::mem::transmute::<__m512, [f32; LANES]>(acc);
        let sum = _mm512_set1_ps(crate::ops::exp::lane_sum(acc));
        let mut j = 0;
        while j < n {
            let lanes = first_lanes(n - j);
            let x = unsafe { _mm512_maskz_loadu_ps(lanes, p.add(j)) };
            unsafe { _mm512_mask_storeu_ps(p.add(j), lanes, _mm512_div_ps(x, sum)) };
            j += LANES;
        }
    }

    /// `G` queries of one head (query `g` at `q[g · q_stride ..]`, its output at `out[g ·
    /// out_stride ..]`, its scores `scores[g · keys ..]`) over the same keys and values.
    #[derive(Clone, Copy)]
    pub struct Queries {
        pub q_stride: usize,
        pub out_stride: usize,
        pub hd: usize,
    }

    /// # Safety
    /// `out` must be valid for writes of `hd` values at `g · at.out_stride` for each `g < G`,
    /// not accessed by anyone else meanwhile.
    pub unsafe fn portable<const G: usize>(
        q: &[f32],
        head: Head<'_>,
        mask: Option<&[f32]>,
        scores: &mut [f32],
        out: *mut f32,
        at: Queries,
    ) {
        let keys = scores.len() / G;
        for (g, scores) in scores.chunks_exact_mut(keys.max(1)).take(G).enumerate() {
            let q = &q[g * at.q_stride..][..at.hd];
            // SAFETY: the caller's contract.
            let out = unsafe { std::slice::from_raw_parts_mut(out.add(g * at.out_stride), at.hd) };
            one(q, head, mask, &mut scores[..keys], out);
        }
    }

    fn one(q: &[f32], head: Head<'_>, mask: Option<&[f32]>, scores: &mut [f32], out: &mut [f32]) {
        let hd = q.len();
        for (j, s) in scores.iter_mut().enumerate() {
            let mut dot = 0f32;
            for (d, &x) in q.iter().enumerate() {
                dot = x.mul_add(head.k[key_at(hd, d, j)], dot);
            }
            *s = dot;
        }
        softmax(scores, mask);
        out.fill(0.0);
        for (j, &w) in scores.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&head.v[j * head.width..][..hd]) {
                *o = w.mul_add(x, *o);
            }
        }
    }

    /// [`portable`] with 16-lane AVX-512 vectors, for a head size that is a multiple of 16: the
    /// `G` queries share every key and value loaded, `B` blocks of 16 keys' scores at a time
    /// (`G · B` independent chains of fused multiply-adds).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA, and `at.hd` must be a multiple of 16; `out` as for
    /// [`portable`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn avx512<const G: usize, const B: usize>(
        q: &[f32],
        head: Head<'_>,
        mask: Option<&[f32]>,
        scores: &mut [f32],
        out: *mut f32,
        at: Queries,
    ) {
        use std::arch::x86_64::*;
        let hd = at.hd;
        let keys = scores.len() / G;
        let Head { k, v, width } = head;
        assert!(hd.is_multiple_of(LANES));
        assert!(scores.len() == G * keys);
        assert!(q.len() >= (G - 1) * at.q_stride + hd);
        assert!(k.len() >= hd * keys.next_multiple_of(LANES));
        assert!(keys == 0 || v.len() >= (keys - 1) * width + hd);
        let (kp, vp, sp, qp) = (k.as_ptr(), v.as_ptr(), scores.as_mut_ptr(), q.as_ptr());
        let mut j = 0;
        while j + B * LANES <= keys {
            // Keys j..j + 16·B of every query.
            let mut acc = [[_mm512_setzero_ps(); B]; G];
            for d in 0..hd {
                // SAFETY: keys j..j + 16·B of dimension d lie in the buffer (asserted above).
                let kv: [__m512; B] = std::array::from_fn(|t| unsafe {
                    _mm512_loadu_ps(kp.add(key_at(hd, d, j + t * LANES)))
                });
                for (g, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(unsafe { *qp.add(g * at.q_stride + d) });
                    for (acc, &kv) in acc.iter_mut().zip(&kv) {
                        *acc = _mm512_fmadd_ps(x, kv, *acc);
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                for (t, acc) in acc.iter().enumerate() {
                    unsafe { _mm512_storeu_ps(sp.add(g * keys + j + t * LANES), *acc) };
                }
            }
            j += B * LANES;
        }
        while j < keys {
            // Keys j..j + 16 (fewer at the end: masked loads and stores).
            let n = (keys - j).min(LANES);
            let lanes = first_lanes(n);
            let mut acc = [_mm512_setzero_ps(); G];
            for d in 0..hd {
                let kv = unsafe { _mm512_maskz_loadu_ps(lanes, kp.add(key_at(hd, d, j))) };
                for (g, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(unsafe { *qp.add(g * at.q_stride + d) });
                    *acc = _mm512_fmadd_ps(x, kv, *acc);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                unsafe { _mm512_mask_storeu_ps(sp.add(g * keys + j), lanes, *acc) };
            }
            j += n;
        }
        for s in scores.chunks_exact_mut(keys.max(1)).take(G) {
            softmax_avx512(&mut s[..keys], mask);
        }
        let op = out;
        let chunks = hd / LANES;
        let mut c = 0;
        let w = &*scores;
        while c < chunks {
            // Up to four 16-lane output chunks of every query at a time, in registers.
            // SAFETY (all four): chunks c.. of every key's values lie in `v`, of every query's
            // output in `out` (asserted above).
            let (v, o) = (vp.add(c * LANES), op.add(c * LANES));
            c += match chunks - c {
                1 => unsafe { weigh::<G, 1>(w, keys, v, width, o, at.out_stride) },
                2 => unsafe { weigh::<G, 2>(w, keys, v, width, o, at.out_stride) },
                3 => unsafe { weigh::<G, 3>(w, keys, v, width, o, at.out_stride) },
                _ => unsafe { weigh::<G, 4>(w, keys, v, width, o, at.out_stride) },
            };
        }
    }

    /// `N` 16-lane chunks of each of `G` outputs: `Σ_j w[g · keys + j] · v[j · width ..]`,
    /// fused in key order, stored at `out + g · out_stride`.
    ///
    /// # Safety
    /// AVX-512F and FMA; `v[j · width + t]` readable for every key `j < keys` and `t < 16 · N`,
    /// `out[g · out_stride + t]` writable for every `g < G`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn weigh<const G: usize, const N: usize>(
        w: &[f32],
        keys: usize,
        v: *const f32,
        width: usize,
        out: *mut f32,
        out_stride: usize,
    ) -> usize {
        use std::arch::x86_64::*;
        assert!(w.len() >= G * keys);
        let mut o = [[_mm512_setzero_ps(); N]; G];
        for j in 0..keys {
            let x: [__m512; N] =
                std::array::from_fn(|t| unsafe { _mm512_loadu_ps(v.add(j * width + t * LANES)) });
            for (g, o) in o.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(w[g * keys + j]);
                for (o, &x) in o.iter_mut().zip(&x) {
                    *o = _mm512_fmadd_ps(wv, x, *o);
                }
            }
        }
        for (g, o) in o.iter().enumerate() {
            for (t, o) in o.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.add(g * out_stride + t * LANES), *o) };
            }
        }
        N
    }
}

/// Large negative score for masked attention positions (transformers adds `finfo(f32).min`).
pub const MASKED: f32 = f32::MIN;

/// `[b, len, heads · head_dim]` → `[b, heads, len, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, len, width] = x.dims();
    x.reshape([batch, len, heads, width / heads])
        .swap_dims(1, 2)
}

/// The additive key mask `[batch, 1, 1, len]` of an attention mask `[batch, len]` (1 = token,
/// 0 = padding): 0 for tokens, [`MASKED`] for padding.
pub fn key_mask(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [batch, len] = attention_mask.dims();
    let pad: Tensor<2, Bool> = attention_mask.clone().equal_elem(0);
    Tensor::<2>::zeros([batch, len], &attention_mask.device())
        .mask_fill(pad, MASKED)
        .reshape([batch, 1, 1, len])
}

/// The causal mask `[1, 1, len, past_len + len]` of `len` new queries after `past_len` cached
/// keys: [`MASKED`] on the future keys.
pub fn causal_mask(len: usize, past_len: usize, device: &Device) -> Tensor<4> {
    // burn's tril_mask is true OUTSIDE the lower triangle: exactly the future keys.
    let future: Tensor<2, Bool> = Tensor::tril_mask([len, past_len + len], past_len as i64, device);
    Tensor::<2>::zeros([len, past_len + len], device)
        .mask_fill(future, MASKED)
        .reshape([1, 1, len, past_len + len])
}

/// `[k_old | k_new]`, `[v_old | v_new]` along the length axis (on a GPU, one kernel for both).
pub fn append_keys_values(
    k_old: Tensor<4>,
    k_new: Tensor<4>,
    v_old: Tensor<4>,
    v_new: Tensor<4>,
) -> (Tensor<4>, Tensor<4>) {
    #[cfg(feature = "gpu")]
    if let Some(kv) = crate::ops::gpu::append_keys_values(&k_old, &k_new, &v_old, &v_new) {
        return kv;
    }
    (
        Tensor::cat(vec![k_old, k_new], 2),
        Tensor::cat(vec![v_old, v_new], 2),
    )
}

/// `softmax(q kᵀ · scale + mask) v` with heads merged: queries `q` `[rows, len, heads · head_dim]`,
/// keys and values `[rows / group, heads, keys, head_dim]`, result `[rows, len, heads · head_dim]`
/// (before the output projection).
///
/// `q` has `group` consecutive rows per row of `k`/`v`/`mask` (the beams of one input attending
/// to its encoder output): their queries are stacked along the length axis, so the keys and
/// values are neither copied per beam nor reordered. `dtype` is the precision of the products
/// (the projections', [`crate::ops::linear::product_dtype`]): in f32 the scale goes on the
/// (smaller) queries; in half precision on the f32 scores, as transformers applies it, so that
/// the queries are rounded unscaled as there. `dropout` acts on the attention weights.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: Tensor<3>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4>>,
    heads: usize,
    group: usize,
    scale: f64,
    dtype: DType,
    dropout: &Dropout,
) -> Tensor<3> {
    let [rows, len, width] = q.dims();
    let inputs = rows / group;
    // [rows, len, d] → [inputs, group·len, d] (rows of an input are consecutive) → heads.
    let q = q.reshape([inputs, group * len, width]);
    // On a GPU in f32: three kernels reading the keys and values where they lie.
    #[cfg(feature = "gpu")]
    if dtype == DType::F32 {
        let queries = q.clone().reshape([rows * len, width]);
        if let Some(out) = crate::ops::gpu::attention(&queries, k, v, mask, scale) {
            return out.reshape([rows, len, width]);
        }
    }
    let q = split_heads(q, heads);
    let mut scores = if dtype == DType::F32 {
        crate::ops::fused::matmul(q.mul_scalar(scale), k.clone().swap_dims(2, 3))
    } else {
        crate::ops::fused::matmul_in(q, k.clone().swap_dims(2, 3), dtype).mul_scalar(scale)
    };
    if let Some(mask) = mask {
        scores = scores + mask.clone();
    }
    let weights = crate::ops::fused::dropout(dropout, crate::ops::fused::softmax_last(scores));
    crate::ops::fused::matmul_in(weights, v.clone(), dtype)
        .swap_dims(1, 2)
        .reshape([rows, len, width])
}

/// Encoder output and what the decoder needs from it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `[batch, src_len, d_model]`
    pub hidden: Tensor<3>,
    /// Additive key mask `[batch, 1, 1, src_len]`: 0 for tokens, `f32::MIN` for padding.
    pub key_mask: Tensor<4>,
}

/// Per-layer decoder state: self-attention keys/values so far (one per row), cross-attention
/// keys/values of the encoder output (one per input, shared by its beams).
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub(crate) self_kv: Option<KeysValues>,
    pub(crate) cross_kv: KeysValues,
}

/// The decoder's incremental state for a set of rows (batch × beams).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) key_mask: Tensor<4>,
    /// Consecutive rows that share one input (beams); their cross-attention state is equal.
    pub(crate) rows_per_input: usize,
    /// Tokens already fed (the position of the next one).
    pub past_len: usize,
}

impl DecoderCache {
    /// Row `i` of the new cache continues row `src[i]` of the old one. Beam search only moves
    /// rows among the beams of one input, which share the cross-attention state: only the
    /// self-attention cache is copied.
    pub fn reorder(&mut self, src: &[usize]) -> crate::Result<()> {
        let g = self.rows_per_input;
        if src.len() != self.rows() || src.iter().enumerate().any(|(i, &s)| s / g != i / g) {
            return Err(crate::Error::Generation(format!(
                "cache reorder must keep rows within their input's {g} beams"
            )));
        }
        let device = self.key_mask.device();
        for layer in &mut self.layers {
            if let Some(kv) = layer.self_kv.take() {
                layer.self_kv = Some(kv.reorder(src, &device));
            }
        }
        Ok(())
    }

    /// Decoder rows: inputs × rows per input.
    pub fn rows(&self) -> usize {
        self.key_mask.dims()[0] * self.rows_per_input
    }
}

#[cfg(test)]
mod tests {
    use super::host_head;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The AVX-512 head gives the portable code's bits (head sizes 16..64, 1..300 keys in a
    /// larger capacity, with and without a mask, a masked key included, 1 to 4 queries sharing
    /// the head, every block count), and the portable code a float64 attention's values.
    #[test]
    fn host_head_paths_agree() {
        let mut checked = 0;
        for (hd, keys, capacity, heads) in [
            (16, 1, 16, 1),
            (32, 7, 16, 3),
            (64, 300, 320, 2),
            (48, 33, 48, 4),
            (64, 100, 112, 1),
        ] {
            let width = heads * hd;
            let k = values(heads * hd * capacity, 1);
            let v = values(keys * width, 2);
            // Four queries at a stride that is not the head size.
            let at = host_head::Queries {
                q_stride: hd + 5,
                out_stride: hd + 3,
                hd,
            };
            let q = values(4 * at.q_stride, 3);
            let mut mask = values(keys, 4);
            mask[keys / 2] = super::MASKED;
            for masked in [None, Some(&mask[..])] {
                for h in 0..heads {
                    let head = host_head::Head {
                        k: &k[h * hd * capacity..][..hd * capacity],
                        v: &v[h * hd..],
                        width,
                    };
                    let (mut s1, mut o1) = (vec![0f32; 4 * keys], vec![0f32; 4 * at.out_stride]);
                    // SAFETY: o1 holds 4 queries' outputs at the stride.
                    unsafe {
                        host_head::portable::<4>(&q, head, masked, &mut s1, o1.as_mut_ptr(), at)
                    };
                    for g in 0..4 {
                        let q = &q[g * at.q_stride..][..hd];
                        let sc: Vec<f64> = (0..keys)
                            .map(|j| {
                                (0..hd)
                                    .map(|d| {
                                        let k = head.k[host_head::key_at(hd, d, j)];
                                        q[d] as f64 * k as f64
                                    })
                                    .sum::<f64>()
                                    + masked.map_or(0.0, |m| m[j] as f64)
                            })
                            .collect();
                        let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = sc.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for d in 0..hd {
                            let want: f64 = (0..keys)
                                .map(|j| e[j] / sum * head.v[j * width + d] as f64)
                                .sum();
                            let got = o1[g * at.out_stride + d] as f64;
                            assert!((got - want).abs() < 1e-5, "hd {hd} keys {keys} d {d}");
                        }
                    }
                    let outs = |o: &[f32], n: usize| -> Vec<u32> {
                        (0..n)
                            .flat_map(|g| o[g * at.out_stride..][..hd].iter().map(|x| x.to_bits()))
                            .collect()
                    };
                    // One query alone: the same bits as in a group.
                    let (mut s, mut o) = (vec![0f32; keys], vec![0f32; at.out_stride]);
                    // SAFETY: as above.
                    unsafe {
                        host_head::portable::<1>(&q, head, masked, &mut s, o.as_mut_ptr(), at)
                    };
                    assert_eq!(outs(&o, 1), outs(&o1, 1));
                    if !(host_head::has_avx512() && hd % 16 == 0) {
                        continue;
                    }
                    #[cfg(target_arch = "x86_64")]
                    #[allow(clippy::type_complexity)]
                    let variants: [(
                        usize,
                        unsafe fn(
                            &[f32],
                            host_head::Head<'_>,
                            Option<&[f32]>,
                            &mut [f32],
                            *mut f32,
                            host_head::Queries,
                        ),
                    ); 6] = [
                        (1, host_head::avx512::<1, 4>),
                        (1, host_head::avx512::<1, 1>),
                        (2, host_head::avx512::<2, 4>),
                        (3, host_head::avx512::<3, 2>),
                        (4, host_head::avx512::<4, 2>),
                        (4, host_head::avx512::<4, 1>),
                    ];
                    #[cfg(target_arch = "x86_64")]
                    for (n, f) in variants {
                        let (mut s2, mut o2) =
                            (vec![0f32; n * keys], vec![0f32; 4 * at.out_stride]);
                        // SAFETY: checked above.
                        unsafe { f(&q, head, masked, &mut s2, o2.as_mut_ptr(), at) };
                        assert_eq!(
                            outs(&o1, n),
                            outs(&o2, n),
                            "hd {hd} keys {keys} {n} queries"
                        );
                        checked += 1;
                    }
                }
            }
        }
        eprintln!("{checked} AVX-512 head cases checked");
    }
}
