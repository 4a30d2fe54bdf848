//! Random cases for a kernel: sizes per dim (drawn and shrunk to a work budget by [`Sizes`]), param values, an
//! optional `Options::split`, and inputs in one of four [`Style`]s (`Off` inputs are valid
//! cu_seqlens); a [`Case`] prints as and parses from a `// case:` line. Everything is drawn
//! from a small seeded generator, so a case is reproducible from its fields alone.

use std::collections::BTreeMap;
use tfmc::hir::{Extent, Kernel, Program};
use tfmc_runtime::{Scalar, Tensor, TensorData};

/// How a case's dim sizes are drawn: one size per dim (from the generator and the smallest size
/// allowed), then shrunk until the iteration space (product of the kernel's index ranges) is at
/// most `budget`.
pub struct Sizes {
    pub draw: fn(&mut Rng, usize) -> usize,
    pub budget: usize,
}

/// The optimizer fuzzer's sizes: mostly 1..=4, up to 9, sometimes 0; at most 4096 points.
pub const SMALL: Sizes = Sizes {
    draw: |r, min_dim| match r.below(20) {
        0 => min_dim,
        1..=4 => 1,
        5..=15 => 2 + r.below(3),
        _ => 5 + r.below(5),
    },
    budget: 4096,
};

/// A small deterministic generator (xorshift64*), so a case is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One element of `xs` (not empty).
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// How float inputs are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Uniform in [-1, 1).
    Unit,
    /// The first float input scaled by 1e4.
    Huge,
    /// A quarter of the elements replaced by finite extremes.
    Extreme,
    /// An eighth of the elements replaced by ±inf or ±1e4.
    Inf,
}

const STYLES: [(Style, &str); 4] = [(Style::Unit, "unit"), (Style::Huge, "huge"), (Style::Extreme, "extreme"), (Style::Inf, "inf")];

/// One run of one kernel.
#[derive(Clone, Debug)]
pub struct Case {
    pub kernel: String,
    pub dims: BTreeMap<String, usize>,
    pub params: BTreeMap<String, Scalar>,
    pub seed: u64,
    pub style: Style,
    /// `Options::split`: split reductions over this index into chunks of this size.
    pub split: Option<(String, i64)>,
}

impl Case {
    /// `kernel=K dims=P:2,M:3 params=W:1 seed=5 style=huge` (what a `// case:` line holds).
    pub fn line(&self) -> String {
        let dims: Vec<String> = self.dims.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| match v {
                Scalar::F(x) => format!("{k}:{x:?}"),
                Scalar::I(i) => format!("{k}:{i}"),
                Scalar::B(b) => format!("{k}:{b}"),
            })
            .collect();
        let style = STYLES.iter().find(|(s, _)| *s == self.style).map_or("unit", |(_, n)| n);
        let split = self.split.as_ref().map_or(String::new(), |(i, c)| format!(" split={i}:{c}"));
        format!("kernel={} dims={} params={} seed={} style={style}{split}", self.kernel, dims.join(","), params.join(","), self.seed)
    }

    /// Parses [`Case::line`] against `program` (param dtypes); missing dims are 2.
    pub fn parse(line: &str, program: &Program) -> Option<Case> {
        let mut case =
            Case { kernel: String::new(), dims: BTreeMap::new(), params: BTreeMap::new(), seed: 0, style: Style::Unit, split: None };
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            let pairs = || value.split(',').filter(|s| !s.is_empty()).filter_map(|kv| kv.split_once(':'));
            match key {
                "kernel" => case.kernel = value.to_string(),
                "dims" => case.dims = pairs().map(|(k, v)| Some((k.to_string(), v.parse().ok()?))).collect::<Option<_>>()?,
                "params" => {
                    for (k, v) in pairs() {
                        let (_, p) = program.param(k)?;
                        let s = if p.dtype.is_float() {
                            Scalar::F(v.parse().ok()?)
                        } else if p.dtype.is_int() {
                            Scalar::I(v.parse().ok()?)
                        } else {
                            Scalar::B(v.parse().ok()?)
                        };
                        case.params.insert(k.to_string(), s);
                    }
                }
                "seed" => case.seed = value.parse().ok()?,
                "style" => case.style = STYLES.iter().find(|(_, n)| *n == value)?.0,
                "split" => case.split = value.split_once(':').and_then(|(i, c)| Some((i.to_string(), c.parse().ok()?))),
                _ => return None,
            }
        }
        let (_, k) = program.kernel(&case.kernel)?;
        for d in k.free_dims() {
            case.dims.entry(d.name.clone()).or_insert(2);
        }
        Some(case)
    }
}

fn work(k: &Kernel, dims: &BTreeMap<String, usize>) -> Option<usize> {
    k.indices.iter().try_fold(1usize, |acc, i| {
        let n = match &i.extent {
            Extent::Const(c) => usize::try_from(*c).ok()?,
            Extent::Dim(d) => dims.get(&k.dims[d.index()].name).copied().unwrap_or(0),
        };
        acc.checked_mul(n.max(1))
    })
}

/// A random case for `kernel`, or `None` when its fixed extents alone exceed the budget.
pub fn random_case(program: &Program, kernel: &str, seed: u64) -> Option<Case> {
    random_case_sized(program, kernel, seed, &SMALL)
}

/// A random case for `kernel` with dims drawn by `sizes`, or `None` when its fixed extents
/// alone exceed the budget.
pub fn random_case_sized(program: &Program, kernel: &str, seed: u64, sizes: &Sizes) -> Option<Case> {
    let (_, k) = program.kernel(kernel)?;
    let mut r = Rng::new(seed);
    let mut dims = BTreeMap::new();
    let finite = std::env::var_os("TFMC_FUZZ_FINITE").is_some();
    let min_dim = usize::from(finite);
    for d in k.free_dims() {
        let n = (sizes.draw)(&mut r, min_dim);
        dims.insert(d.name.clone(), n.max(min_dim));
    }
    // Grouped-query heads: H a multiple of G, usually.
    if let (Some(&g), true) = (dims.get("G"), dims.contains_key("H"))
        && g > 0
        && r.below(4) != 0
    {
        dims.insert("H".to_string(), g * (1 + r.below(3)));
    }
    while work(k, &dims)? > sizes.budget {
        let (name, n) = dims.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (k.clone(), *n))?;
        if n <= 1 {
            return None;
        }
        dims.insert(name, n - 1);
    }
    let mut params = BTreeMap::new();
    for p in &program.params {
        if p.default.is_some() && r.below(4) == 0 {
            continue;
        }
        let v = if p.dtype.is_float() {
            Scalar::F(r.pick(&[0.0, 1e-6, 0.5, 1.0, 2.0, 30.0, -1.0, 1e4]))
        } else if p.dtype.is_int() {
            Scalar::I(r.below(8) as i64 - 1)
        } else {
            Scalar::B(r.below(2) == 0)
        };
        params.insert(p.name.clone(), v);
    }
    let style = match r.below(10) {
        0..=4 => Style::Unit,
        5 | 6 => Style::Huge,
        7 | 8 => Style::Extreme,
        _ if finite => Style::Extreme,
        _ => Style::Inf,
    };
    // Sometimes split the reductions over one index (flash-decoding's chunks).
    let split =
        (r.below(4) == 0 && !k.indices.is_empty()).then(|| (k.indices[r.below(k.indices.len())].name.clone(), 1 + r.below(4) as i64));
    Some(Case { kernel: kernel.to_string(), dims, params, seed: r.next() % 1_000_000, style, split })
}

/// The inputs of a case: `tfmc::inputs::random_inputs`, restyled, with valid `Off` offsets.
pub fn make_inputs(program: &Program, case: &Case) -> Option<BTreeMap<String, Tensor>> {
    let (_, k) = program.kernel(&case.kernel)?;
    let mut inputs = tfmc::inputs::random_inputs(program, &case.kernel, &case.dims, case.seed).ok()?;
    let mut r = Rng::new(case.seed ^ 0x5eed);
    let mut first_float = true;
    for &tid in &k.inputs {
        let name = &k.tensors[tid.index()].name;
        let Some(t) = inputs.get_mut(name) else { continue };
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        if dtype.is_float() {
            let mut v = t.to_f64_vec();
            match case.style {
                Style::Unit => {}
                Style::Huge if first_float => v.iter_mut().for_each(|x| *x *= 1e4),
                Style::Huge => {}
                Style::Extreme => {
                    for x in &mut v {
                        if r.below(4) == 0 {
                            *x = r.pick(&[1e4, -1e4, 1e8, -1e8, 0.0, -0.0, 1e-30]);
                        }
                    }
                }
                Style::Inf => {
                    for x in &mut v {
                        if r.below(8) == 0 {
                            *x = r.pick(&[f64::INFINITY, f64::NEG_INFINITY, 1e4, -1e4]);
                        }
                    }
                }
            }
            first_float = false;
            *t = Tensor::from_f64(dtype, shape, v).ok()?;
        } else if name == "Off" && shape.len() == 1 {
            // cu_seqlens: 0 first, T last, non-decreasing between.
            let (n, total) = (shape[0], case.dims.get("T").copied().unwrap_or(0));
            let mut cuts: Vec<i64> = (0..n).map(|_| r.below(total + 1) as i64).collect();
            cuts.sort_unstable();
            if let Some(first) = cuts.first_mut() {
                *first = 0;
            }
            if n > 1 {
                cuts[n - 1] = total as i64;
            }
            *t = Tensor::new(dtype, shape, TensorData::I(cuts)).ok()?;
        }
    }
    Some(inputs)
}
