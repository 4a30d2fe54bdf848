//! The IR's expression language: a small set of primitive ops over named index spaces, as an
//! egg `Language`, so the same terms are printed, verified, interpreted and rewritten.
//!
//! Forms (s-expressions; `I` an index symbol, `T` a tensor symbol):
//! - leaves: numbers (`1`, `0.5`, `inf`, `-inf`), `true`/`false`, symbols;
//! - `(idx I)` an index's value, `(dim D)` a dimension's size, `(param W)` a param;
//! - `(read T s1 .. sk)` gather: element of tensor `T` at integer subscript terms;
//! - maps: `+ - * / % neg not < <= > >= == != && || (if c a b) (call f x ..) (cast dt x)`;
//! - `(where F x)` filter: `x` where `F` holds, no point otherwise;
//! - `(dense x)`: `x`, or 0 of its type where `x` has no point (a kernel call's arguments and
//!   results are dense tensors, so inlined calls read and write through `dense`);
//! - reductions `(sum I lo hi F body)`, `max`, `min`, `prod`: over `I` in `lo..hi` where `F`;
//! - `(ured R k I lo hi F b1 .. bn)`: field `k` of user reduction `R`;
//! - `(osm I lo hi F s v)`: the fused one-pass online softmax, `Σ_I softmax_I(s) · v`, with a
//!   running max and rescaled running sums (FuseMax's 1-pass cascade);
//! - `(osmz I lo hi F s v c)`: the same with a sink: `Σ_I e^(s - G) · v / (e^(c - G) + Σ_I
//!   e^(s - G))`, `G = max_I s`, `c` free of `I` (attention sinks; `c = 0` is softmax₁, "quiet
//!   attention"): the online state's last max and sum give the denominator;
//! - `(prev T c)`: in a scan body, the scan's own value `c` steps back.
//!
//! Invariant: a reduction binds `I` in `F` and `body` only (not in `lo`/`hi`); an inner binder
//! may shadow an outer index of the same name (inlining keeps names when nothing is captured).

use egg::{Id, Symbol, define_language};
use std::fmt;
use std::str::FromStr;

/// A numeric or boolean constant with total equality (floats compared by bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Const {
    /// An integer.
    Int(i64),
    /// A float, by its bits (so it can be hashed).
    Float(u64),
    /// A boolean.
    Bool(bool),
}

impl Const {
    /// A float constant.
    pub fn float(x: f64) -> Const {
        Const::Float(x.to_bits())
    }

    /// The value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Const::Int(i) => i as f64,
            Const::Float(b) => f64::from_bits(b),
            Const::Bool(b) => f64::from(u8::from(b)),
        }
    }
}

/// Prints so that [`Const::from_str`] gives back the same value, floats bit for bit: the
/// shortest decimal that round-trips (always with a `.` or an exponent), `inf`, `-inf`, `nan`
/// for the default NaN and `nan:0x<bits>` for any other.
impl fmt::Display for Const {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Const::Int(i) => write!(f, "{i}"),
            Const::Bool(b) => write!(f, "{b}"),
            Const::Float(bits) => {
                let x = f64::from_bits(*bits);
                if x.is_infinite() {
                    f.write_str(if x > 0.0 { "inf" } else { "-inf" })
                } else if x.is_nan() {
                    // The default NaN prints as `nan`; any other NaN keeps its bits.
                    if *bits == f64::NAN.to_bits() { f.write_str("nan") } else { write!(f, "nan:0x{bits:016x}") }
                } else {
                    // `{:?}` always shows a `.` or an exponent, so it parses back as a float.
                    write!(f, "{x:?}")
                }
            }
        }
    }
}

impl FromStr for Const {
    type Err = ();
    fn from_str(s: &str) -> Result<Const, ()> {
        match s {
            "true" => return Ok(Const::Bool(true)),
            "false" => return Ok(Const::Bool(false)),
            "inf" => return Ok(Const::float(f64::INFINITY)),
            "-inf" => return Ok(Const::float(f64::NEG_INFINITY)),
            "nan" => return Ok(Const::float(f64::NAN)),
            _ => {}
        }
        if let Some(hex) = s.strip_prefix("nan:0x") {
            return match u64::from_str_radix(hex, 16) {
                Ok(bits) if f64::from_bits(bits).is_nan() => Ok(Const::Float(bits)),
                _ => Err(()),
            };
        }
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Const::Int(i));
        }
        if s.contains(['.', 'e', 'E']) && s.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return s.parse::<f64>().map(Const::float).map_err(|_| ());
        }
        Err(())
    }
}

define_language! {
    /// One IR node. See the module docs for the meaning of each form.
    pub enum Tfm {
        "idx" = Idx(Id),
        "dim" = Dim(Id),
        "param" = Param(Id),
        "read" = Read(Box<[Id]>),
        "+" = Add([Id; 2]),
        "-" = Sub([Id; 2]),
        "*" = Mul([Id; 2]),
        "/" = Div([Id; 2]),
        "%" = Rem([Id; 2]),
        "neg" = Neg(Id),
        "not" = Not(Id),
        "<" = Lt([Id; 2]),
        "<=" = Le([Id; 2]),
        ">" = Gt([Id; 2]),
        ">=" = Ge([Id; 2]),
        "==" = Eq([Id; 2]),
        "!=" = Ne([Id; 2]),
        "&&" = And([Id; 2]),
        "||" = Or([Id; 2]),
        "if" = If([Id; 3]),
        "call" = Call(Box<[Id]>),
        "cast" = Cast([Id; 2]),
        "where" = Where([Id; 2]),
        "dense" = Dense(Id),
        "sum" = Sum([Id; 5]),
        "max" = Max([Id; 5]),
        "min" = Min([Id; 5]),
        "prod" = Prod([Id; 5]),
        "ured" = URed(Box<[Id]>),
        "osm" = Osm([Id; 6]),
        "osmz" = OsmZ([Id; 7]),
        "prev" = Prev([Id; 2]),
        Const(Const),
        Symbol(Symbol),
    }
}

impl Tfm {
    /// For a reduction node (`sum max min prod osm osmz`), its `[index, lo, hi, filter]` children.
    pub fn reduction_head(&self) -> Option<[Id; 4]> {
        match self {
            Tfm::Sum(c) | Tfm::Max(c) | Tfm::Min(c) | Tfm::Prod(c) => Some([c[0], c[1], c[2], c[3]]),
            Tfm::Osm(c) => Some([c[0], c[1], c[2], c[3]]),
            Tfm::OsmZ(c) => Some([c[0], c[1], c[2], c[3]]),
            Tfm::URed(c) if c.len() >= 6 => Some([c[2], c[3], c[4], c[5]]),
            _ => None,
        }
    }
}
