//! Token embeddings and the output projection tied to them, over a table held whole or — when a
//! device cannot hold it as one buffer (WebGPU's binding limit) — as consecutive row blocks.
//! On a GPU the lookup is one gather kernel per block; on the CPU the output projection of a
//! q8/q4 bundle or an f16/bf16 checkpoint runs on the host products ([`HostWeight`]).

use crate::ops::linear::{
    product_dtype, project_host, times_weight, weight_times, HostWeight, FEW_ROWS,
};
use burn::module::Param;
use burn::tensor::{DType, Int, Tensor};

/// Rows `ids` `[batch, len]` of `table` `[vocab, d]` (or of its row blocks `parts` when not
/// empty), in f32, times `scale`. `training`: the result goes on the autodiff device, so that
/// every later dropout applies.
pub fn embed(
    table: &Param<Tensor<2>>,
    parts: &[Param<Tensor<2>>],
    ids: Tensor<2, Int>,
    scale: f64,
    training: bool,
) -> Tensor<3> {
    let [batch, len] = ids.dims();
    let ids = ids.reshape([batch * len]);
    // On a GPU: one gather kernel per part, the scale applied there.
    #[cfg(feature = "gpu")]
    if !training {
        let tables: Vec<Tensor<2>> = match parts.is_empty() {
            true => vec![table.val()],
            false => parts.iter().map(|p| p.val()).collect(),
        };
        if let Some(x) = crate::ops::gpu::embed_rows(&tables, &ids, scale as f32) {
            let [_, d_model] = x.dims();
            return x.reshape([batch, len, d_model]);
        }
    }
    let x = if parts.is_empty() {
        table.val().select(0, ids)
    } else {
        // Each part gives the rows it holds (ids shifted into its range, others clamped and
        // then zeroed); exactly one part holds each id, so the sum is the row itself.
        let mut start = 0i64;
        let mut sum: Option<Tensor<2>> = None;
        for part in parts {
            let part = part.val();
            let [rows, _] = part.dims();
            let end = start + rows as i64;
            let inside = ids
                .clone()
                .greater_equal_elem(start)
                .bool_and(ids.clone().lower_elem(end));
            let local = ids.clone().sub_scalar(start).clamp(0, rows as i64 - 1);
            let got = part.select(0, local);
            let outside = inside.bool_not().unsqueeze_dim::<2>(1).expand(got.dims());
            let got = got.mask_fill(outside, 0.0);
            sum = Some(match sum {
                Some(acc) => acc + got,
                None => got,
            });
            start = end;
        }
        sum.expect("parts is not empty")
    };
    let [_, d_model] = x.dims();
    let x = x.cast(DType::F32).reshape([batch, len, d_model]);
    let x = if training { x.autodiff() } else { x };
    if scale != 1.0 {
        x.mul_scalar(scale)
    } else {
        x
    }
}

/// The output projection tied to an embedding table: `hidden` `[rows, len, d]` times
/// `table`ᵀ (or its row blocks `parts`), plus `bias` `[vocab]` when given — or, when the
/// table is also held for the CPU's own products, `host` (which holds the bias).
pub fn tied_output(
    table: &Param<Tensor<2>>,
    parts: &[Param<Tensor<2>>],
    bias: Option<&Param<Tensor<1>>>,
    host: Option<&HostWeight>,
    hidden: Tensor<3>,
) -> Tensor<3> {
    if let Some(w) = host {
        return project_host(w, hidden);
    }
    let [rows, len, d_model] = hidden.dims();
    let hidden = hidden.reshape([rows * len, d_model]);
    let project = |table: Tensor<2>| {
        let dtype = product_dtype(&table);
        if rows * len <= FEW_ROWS {
            weight_times(table, hidden.clone().cast(dtype).transpose())
                .transpose()
                .cast(DType::F32)
        } else {
            times_weight(hidden.clone(), table.transpose(), dtype)
        }
    };
    let logits = if parts.is_empty() {
        project(table.val())
    } else {
        Tensor::cat(parts.iter().map(|p| project(p.val())).collect(), 1)
    };
    let [_, vocab] = logits.dims();
    let logits = match bias {
        Some(b) => logits + b.val().unsqueeze::<2>(),
        None => logits,
    };
    logits.reshape([rows, len, vocab])
}

/// Puts a table held as row blocks back into one tensor (`parts` emptied).
pub fn join_parts(table: &mut Param<Tensor<2>>, parts: &mut Vec<Param<Tensor<2>>>) {
    if !parts.is_empty() {
        let parts = std::mem::take(parts);
        *table = Param::from_tensor(Tensor::cat(parts.iter().map(|p| p.val()).collect(), 0));
    }
}
