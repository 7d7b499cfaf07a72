//! torch's CPU numerics, reproduced bit for bit: float32 `log_softmax` (AVX-512 kernel, SLEEF
//! `expf_u10`), `argmax`, and `torch.topk` (libstdc++ partial_sort / nth_element + sort).

pub(super) const NEG_1E9: f32 = -1.0e9;

pub(super) use crate::ops::exp::expf_u10 as sleef_expf_u10;
#[allow(unused_imports)]
pub(super) use crate::ops::exp::{fma32, pow2i};

/// In-place float32 `torch.nn.functional.log_softmax` over one row, following
/// torch's CPU kernel (`_vec_log_softmax_lastdim`, AVX-512: 16 lanes):
/// max; `sum(exp(x - max))` accumulated in 16 lanes then tree-reduced (sequentially
/// for rows shorter than 16); `out = (x - max) - log(sum)`.
pub(crate) fn log_softmax_in_place(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if row.len() >= 16 && crate::ops::exp::has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked).
        return unsafe { log_softmax_avx512(row) };
    }
    log_softmax_scalar(row)
}

/// [`log_softmax_in_place`] without vectors.
pub(super) fn log_softmax_scalar(row: &mut [f32]) {
    pub(super) const LANES: usize = 16;
    if row.is_empty() {
        return;
    }
    let mut max = row[0];
    for &x in row.iter() {
        // vec::maximum propagates NaN
        if x.is_nan() || max.is_nan() {
            max = f32::NAN;
        } else if x > max {
            max = x;
        }
    }
    let n = row.len();
    let sum = if n < LANES {
        let mut acc = sleef_expf_u10(row[0] - max);
        for &x in &row[1..] {
            acc += sleef_expf_u10(x - max);
        }
        acc
    } else {
        let mut acc = [0f32; LANES];
        for (a, &x) in acc.iter_mut().zip(&row[..LANES]) {
            *a = sleef_expf_u10(x - max);
        }
        let full = n - n % LANES;
        for chunk in row[LANES..full].chunks_exact(LANES) {
            let mut e = [0f32; LANES];
            for (e, &x) in e.iter_mut().zip(chunk) {
                *e = sleef_expf_u10(x - max);
            }
            for (a, e) in acc.iter_mut().zip(e) {
                *a += e;
            }
        }
        for (a, &x) in acc.iter_mut().zip(&row[full..]) {
            *a += sleef_expf_u10(x - max);
        }
        crate::ops::exp::lane_sum(acc)
    };
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// [`log_softmax_in_place`] for a row of 16 values or more with AVX-512: the same operations
/// (the 16 accumulators one vector, the exponentials [`crate::ops::exp::expf_u10_avx512`]), so
/// the same bits.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn log_softmax_avx512(row: &mut [f32]) {
    use crate::ops::exp::expf_u10_avx512 as exp;
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    let n = row.len();
    assert!(n >= LANES);
    let full = n - n % LANES;
    let rest: __mmask16 = ((1u32 << (n % LANES)) - 1) as __mmask16;
    let p = row.as_mut_ptr();
    // The maximum: the one value the scalar loop keeps unless a NaN (then NaN) or a zero (±0
    // keep the first one's sign: that loop decides).
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut nan: __mmask16 = 0;
    for c in (0..full).step_by(LANES) {
        // SAFETY (every load and store here): within the row (c + 16 <= full <= n; the last
        // ones masked to the n % 16 values left).
        let x = unsafe { _mm512_loadu_ps(p.add(c)) };
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        m = _mm512_max_ps(m, x);
    }
    let x = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), rest, p.add(full)) };
    nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    m = _mm512_max_ps(m, x);
    let max = if nan != 0 {
        f32::NAN
    } else {
        let max = _mm512_reduce_max_ps(m);
        if max == 0.0 {
            let mut max = row[0];
            for &x in row.iter() {
                if x > max {
                    max = x;
                }
            }
            max
        } else {
            max
        }
    };
    let mv = _mm512_set1_ps(max);
    let mut acc = exp(_mm512_sub_ps(unsafe { _mm512_loadu_ps(p) }, mv));
    for c in (LANES..full).step_by(LANES) {
        let e = exp(_mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(c)) }, mv));
        acc = _mm512_add_ps(acc, e);
    }
    let e = exp(_mm512_sub_ps(
        unsafe { _mm512_maskz_loadu_ps(rest, p.add(full)) },
        mv,
    ));
    acc = _mm512_mask_add_ps(acc, rest, acc, e);
    let acc: [f32; LANES] = std::mem::transmute(acc);
    let log_sum = crate::ops::exp::lane_sum(acc).ln();
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// `torch.argmax` over a row: the first maximal index; NaN counts as maximal.
pub(super) fn argmax(row: &[f32]) -> usize {
    let mut best = 0usize;
    let mut bv = row[0];
    for (i, &x) in row.iter().enumerate().skip(1) {
        if bv.is_nan() {
            break;
        }
        if x.is_nan() || x > bv {
            best = i;
            bv = x;
        }
    }
    best
}

// ---------------------------------------------------------------------------
// torch.topk (CPU) = libstdc++ partial_sort / nth_element + sort, ported verbatim
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Elem {
    pub v: f32,
    pub i: usize,
}

/// torch's comparator for `largest=True`: NaN first, then descending.
#[inline(always)]
pub(super) fn gt(x: f32, y: f32) -> bool {
    (x.is_nan() && !y.is_nan()) || x > y
}

#[inline(always)]
pub(super) fn comp(a: &Elem, b: &Elem) -> bool {
    gt(a.v, b.v)
}

pub(super) fn push_heap(a: &mut [Elem], mut hole: usize, top: usize, value: Elem) {
    while hole > top {
        let parent = (hole - 1) / 2;
        if comp(&a[parent], &value) {
            a[hole] = a[parent];
            hole = parent;
        } else {
            break;
        }
    }
    a[hole] = value;
}

pub(super) fn adjust_heap(a: &mut [Elem], mut hole: usize, len: usize, value: Elem) {
    let top = hole;
    let mut second = hole;
    if len == 0 {
        return;
    }
    while second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if comp(&a[second], &a[second - 1]) {
            second -= 1;
        }
        a[hole] = a[second];
        hole = second;
    }
    if len & 1 == 0 && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        a[hole] = a[second - 1];
        hole = second - 1;
    }
    push_heap(a, hole, top, value);
}

pub(super) fn make_heap(a: &mut [Elem]) {
    let len = a.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let v = a[parent];
        adjust_heap(a, parent, len, v);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// `__pop_heap(first, last, result)`: the value at `result` replaces the top.
pub(super) fn pop_heap(a: &mut [Elem], last: usize, result: usize) {
    let value = a[result];
    a[result] = a[0];
    adjust_heap(a, 0, last, value);
}

pub(super) fn heap_select(a: &mut [Elem], middle: usize) {
    make_heap(&mut a[..middle]);
    for i in middle..a.len() {
        if comp(&a[i], &a[0]) {
            pop_heap(a, middle, i);
        }
    }
}

pub(super) fn sort_heap(a: &mut [Elem]) {
    let mut last = a.len();
    while last > 1 {
        last -= 1;
        pop_heap(a, last, last);
    }
}

pub(super) fn move_median_to_first(a: &mut [Elem], result: usize, x: usize, y: usize, z: usize) {
    if comp(&a[x], &a[y]) {
        if comp(&a[y], &a[z]) {
            a.swap(result, y);
        } else if comp(&a[x], &a[z]) {
            a.swap(result, z);
        } else {
            a.swap(result, x);
        }
    } else if comp(&a[x], &a[z]) {
        a.swap(result, x);
    } else if comp(&a[y], &a[z]) {
        a.swap(result, z);
    } else {
        a.swap(result, y);
    }
}

pub(super) fn unguarded_partition(
    a: &mut [Elem],
    mut first: usize,
    mut last: usize,
    pivot: usize,
) -> usize {
    loop {
        while comp(&a[first], &a[pivot]) {
            first += 1;
        }
        last -= 1;
        while comp(&a[pivot], &a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

pub(super) fn unguarded_partition_pivot(a: &mut [Elem], first: usize, last: usize) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(a, first, first + 1, mid, last - 1);
    unguarded_partition(a, first + 1, last, first)
}

pub(super) fn unguarded_linear_insert(a: &mut [Elem], mut last: usize) {
    let val = a[last];
    let mut next = last - 1;
    while comp(&val, &a[next]) {
        a[last] = a[next];
        last = next;
        if next == 0 {
            break;
        }
        next -= 1;
    }
    a[last] = val;
}

pub(super) fn insertion_sort(a: &mut [Elem], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if comp(&a[i], &a[first]) {
            let val = a[i];
            a.copy_within(first..i, first + 1);
            a[first] = val;
        } else {
            unguarded_linear_insert(a, i);
        }
    }
}

#[inline]
pub(super) fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

pub(super) fn introselect(
    a: &mut [Elem],
    mut first: usize,
    nth: usize,
    mut last: usize,
    mut depth: usize,
) {
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut a[first..last], nth + 1 - first);
            a.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(a, first, last);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(a, first, last);
}

pub(super) fn nth_element(a: &mut [Elem], nth: usize) {
    let n = a.len();
    if n == 0 || nth == n {
        return;
    }
    introselect(a, 0, nth, n, lg(n) * 2);
}

pub(super) const S_THRESHOLD: usize = 16;

pub(super) fn introsort_loop(a: &mut [Elem], first: usize, mut last: usize, mut depth: usize) {
    while last - first > S_THRESHOLD {
        if depth == 0 {
            // __partial_sort(first, last, last)
            heap_select(&mut a[first..last], last - first);
            sort_heap(&mut a[first..last]);
            return;
        }
        depth -= 1;
        let cut = unguarded_partition_pivot(a, first, last);
        introsort_loop(a, cut, last, depth);
        last = cut;
    }
}

pub(super) fn std_sort(a: &mut [Elem]) {
    let n = a.len();
    if n == 0 {
        return;
    }
    introsort_loop(a, 0, n, lg(n) * 2);
    if n > S_THRESHOLD {
        insertion_sort(a, 0, S_THRESHOLD);
        for i in S_THRESHOLD..n {
            unguarded_linear_insert(a, i);
        }
    } else {
        insertion_sort(a, 0, n);
    }
}

/// `torch.topk(values, k, largest=True, sorted=True)` on CPU, in place: afterwards
/// `q[..k]` holds the result (value, original position) in torch's order.
pub(crate) fn topk(q: &mut [Elem], k: usize) {
    let n = q.len();
    if k == 0 {
        return;
    }
    assert!(k <= n, "topk: k out of range");
    if k * 64 <= n {
        heap_select(q, k);
        sort_heap(&mut q[..k]);
    } else {
        nth_element(q, k - 1);
        std_sort(&mut q[..k - 1]);
    }
}

/// `topk` over the virtual array `x[j] = rows[j] + offset[j / width]` (length
/// `offset.len() * width`), streaming when torch takes the `partial_sort` path so
/// the array is never materialised. `out` receives the k elements; `scratch` is reused.
pub(super) fn topk_offset_rows(
    rows: &[f32],
    offset: &[f32],
    width: usize,
    k: usize,
    out: &mut Vec<Elem>,
    scratch: &mut Vec<Elem>,
) {
    let n = offset.len() * width;
    out.clear();
    if k * 64 <= n {
        // std::partial_sort = __heap_select + __sort_heap; the tail elements are only
        // read once each, so they are produced on the fly.
        for j in 0..k {
            out.push(Elem {
                v: rows[j] + offset[j / width],
                i: j,
            });
        }
        make_heap(out);
        let mut top = out[0].v;
        let mut j = k;
        while j < n {
            let r = j / width;
            let end = (r + 1) * width;
            let o = offset[r];
            let seg = &rows[j..end];
            for (t, &x) in seg.iter().enumerate() {
                let v = x + o;
                if gt(v, top) {
                    adjust_heap(out, 0, k, Elem { v, i: j + t });
                    top = out[0].v;
                }
            }
            j = end;
        }
        sort_heap(out);
    } else {
        scratch.clear();
        for j in 0..n {
            scratch.push(Elem {
                v: rows[j] + offset[j / width],
                i: j,
            });
        }
        topk(scratch, k);
        out.extend_from_slice(&scratch[..k]);
    }
}

#[cfg(test)]
mod vector_tests {
    /// The AVX-512 log-softmax gives the scalar code's bits: lengths 16 to 50,265, rows with a
    /// NaN, infinities, a zero maximum of either sign, all equal values.
    #[test]
    fn avx512_log_softmax_is_the_scalar_one() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for n in [16, 17, 31, 32, 33, 100, 1000, 50_265] {
            rows.push((0..n).map(|_| next() * 30.0).collect());
        }
        let mut r: Vec<f32> = (0..40).map(|_| -next().abs() - 1.0).collect();
        r[7] = -0.0;
        r[20] = 0.0;
        rows.push(r.clone());
        r[7] = 0.0;
        r[20] = -0.0;
        rows.push(r.clone());
        r[3] = f32::NAN;
        rows.push(r.clone());
        r[3] = f32::NEG_INFINITY;
        rows.push(r.clone());
        r[5] = f32::INFINITY;
        rows.push(r);
        rows.push(vec![2.5; 48]);
        rows.push(
            (0..64)
                .map(|i| if i % 3 == 0 { -1e9 } else { next() })
                .collect(),
        );
        for row in rows {
            let mut a = row.clone();
            let mut b = row.clone();
            super::log_softmax_in_place(&mut a);
            super::log_softmax_scalar(&mut b);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{} values", row.len());
        }
    }
}
