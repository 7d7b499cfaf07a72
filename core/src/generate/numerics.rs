//! torch's CPU numerics, reproduced bit for bit: float32 `log_softmax` (AVX-512 kernel, SLEEF
//! `expf_u10`), `argmax`, and `torch.topk` (libstdc++ partial_sort / nth_element + sort).

pub(super) const NEG_1E9: f32 = -1.0e9;

/// `fma` for f32 through f64 (the product is exact in f64; the sum rounds twice,
/// which differs from a true fused multiply-add only in rare ties).
#[inline(always)]
pub(super) fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

#[inline(always)]
pub(super) fn pow2i(q: i32) -> f32 {
    f32::from_bits((q.wrapping_add(0x7f) as u32) << 23)
}

/// SLEEF `xexpf` (the 1.0-ULP single-precision exp torch's CPU `Vectorized<float>::exp`
/// uses), scalar port.
#[inline(always)]
#[allow(clippy::excessive_precision)] // SLEEF's constants, verbatim
pub(super) fn sleef_expf_u10(d: f32) -> f32 {
    pub(super) const R_LN2F: f32 = std::f32::consts::LOG2_E;
    pub(super) const L2UF: f32 = 0.693_145_751_953_125;
    pub(super) const L2LF: f32 = 1.428_606_765_330_187e-6;
    // round-half-even of d * log2(e) (exact for |x| < 2^22; larger |d| is masked below)
    pub(super) const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let t = d * R_LN2F + MAGIC;
    let qf = t - MAGIC;
    let q = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let mut s = fma32(qf, -L2UF, d);
    s = fma32(qf, -L2LF, s);
    let mut u = 0.000_198_527_617_612_853_646_278_381_f32;
    u = fma32(u, s, 0.001_393_043_552_525_341_510_772_71);
    u = fma32(u, s, 0.008_333_360_776_305_198_669_433_59);
    u = fma32(u, s, 0.041_666_485_369_205_474_853_515_6);
    u = fma32(u, s, 0.166_666_671_633_720_397_949_219);
    u = fma32(u, s, 0.5);
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

/// In-place float32 `torch.nn.functional.log_softmax` over one row, following
/// torch's CPU kernel (`_vec_log_softmax_lastdim`, AVX-512: 16 lanes):
/// max; `sum(exp(x - max))` accumulated in 16 lanes then tree-reduced (sequentially
/// for rows shorter than 16); `out = (x - max) - log(sum)`.
pub(crate) fn log_softmax_in_place(row: &mut [f32]) {
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
        let mut s = LANES / 2;
        while s >= 1 {
            let prev = acc;
            for (i, a) in acc.iter_mut().enumerate() {
                *a = prev[i] + prev[i ^ s];
            }
            s /= 2;
        }
        acc[0]
    };
    let log_sum = sum.ln();
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
