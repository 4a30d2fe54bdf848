//! KIR, the kernel IR: a scheduled loop nest, the one thing every code generator consumes
//! (LLVM and Cranelift for CPUs, NVPTX for GPUs). The schedule ([`super`]) decides loop order,
//! tiles, parallel loops and local buffers; a backend only translates these constructs.
//!
//! A [`Func`] is one kernel with the packed C ABI
//! `int32_t f(void *const *bufs, const int64_t *dims, const uint64_t *params)`:
//! `bufs` holds one pointer per argument buffer (inputs then outputs), `dims` the size of
//! every symbolic dim, `params` one 8-byte slot per runtime param (an `int64_t` for integer
//! and bool params, a `double` for float params). It returns 0, or a [`fail_code`].
//!
//! Semantics:
//! - Values have a [`Ty`]; `Bool` is `i1`. Buffers hold [`Ty`] elements in memory (`Bool` as
//!   one byte 0/1; `F16`/`BF16` in their own formats): a load of `F16`/`BF16` yields `F32`,
//!   a store of `F32` into one rounds to nearest even.
//! - Every variable is a mutable scalar local of its declared type ([`Func::vars`]), assigned
//!   by [`Stmt::Set`]. A variable is always set before it is read (the schedule guarantees).
//!   The kernel's dims and params are variables set on entry from the ABI arrays.
//! - [`Stmt::Parallel`] runs its body for `var` in `0..n` on the thread pool
//!   (`tfmc_parallel_for`), iterations in any order and concurrently: the body may read any
//!   variable set before the loop, its own writes to variables are private to the iteration
//!   (a backend outlines the body and passes the variables it reads by value). Iterations
//!   store to disjoint elements. `Parallel` never nests inside another `Parallel`.
//! - [`BufKind::Heap`] buffers are allocated by [`Stmt::Alloc`] (kernel level, outside any
//!   `Parallel`) and freed when the kernel returns, however it returns. [`BufKind::Stack`]
//!   buffers are fixed-size arrays local to the function or to each parallel iteration that
//!   uses them; their contents are unspecified until stored.
//! - [`Stmt::Fail`] stops the kernel: the first failure's code is returned (other parallel
//!   iterations may still run to completion; their stores do not matter).
//! - Arithmetic follows the IEEE / two's-complement rules of the operand type: integer
//!   `Div`/`Rem` truncate (the schedule guards zero divisors and overflow explicitly with
//!   [`BinOp::AddOverflows`] and friends), float `Rem` is C's `fmod`, `Min`/`Max` on floats
//!   return NaN if either operand is NaN. A float → integer [`Expr::Cast`] truncates toward
//!   zero and saturates (NaN gives 0). Float ops may be contracted into FMAs; a `Binary`
//!   with `reassoc` may also be reassociated (the schedule sets it only on reduction
//!   accumulators, where the result is documented to be order-dependent).
//!
//! **GPU dialect** (NVPTX only: `validate::check` rejects each construct by its kind,
//! `validate::check_gpu` accepts them under these rules). Constructs of their own, so no CPU
//! kernel can use one by accident, and a CPU backend's exhaustive matches name (and reject) each:
//! - a *block parallel* [`Stmt::BlockParallel`] (`threads` = `T`, a positive multiple of 32):
//!   each iteration of `var` in `0..n` is a block of `T` threads that run the body
//!   concurrently. Every thread runs the same iterations, and variables are private to a
//!   thread. A kernel's block parallels all have the same `T`; they never nest in a
//!   `Parallel` or another block parallel, and a `Parallel` never nests in one.
//! - the *thread index* [`Func::thread`]: the `I64` variable each thread of a block parallel
//!   sees equal to its index in `0..T`; never set, read only inside block parallels. A kernel
//!   has at most one (its name, `gpu:thread` from the schedule, is for display only).
//! - a *barrier* [`Stmt::Barrier`]: every thread of the block waits there until all have
//!   arrived (`bar.sync 0`). Only inside a block parallel, at block-uniform control flow (every
//!   thread reaches it the same number of times).
//! - *shared memory* [`BufKind::Shared`]: one array per block of a block parallel, visible to
//!   all its threads (ordered by barriers); used only in block parallels.
//! - no `Fail` inside a block parallel (a thread leaving early would strand a barrier).
//! - a *tensor-core product* [`Stmt::Mma`]: inside a block parallel, at block-uniform control
//!   flow.
//!
//! [`gpu`] finds these constructs by kind (`uses_dialect`, `block_threads`, `has_mma`).
//!
//! **Tile products** ([`Stmt::TileProduct`], every target): a register-blocked `C = init + A·B`
//! of a constant `m × n` tile over a run-time `K`, defined by its scalar loop expansion
//! (`schedule::expand`); the LLVM CPU backend lowers it to vector code, the others run the
//! expansion.

use std::fmt;

/// A value or element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// A boolean (`i1`; one byte in memory).
    Bool,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer (indices, dims, sizes).
    I64,
    /// IEEE half (memory only: loads give `F32`).
    F16,
    /// bfloat16 (memory only: loads give `F32`).
    BF16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
}

impl Ty {
    /// The type a load of this element type yields (`F16`/`BF16` widen to `F32`).
    pub fn value(self) -> Ty {
        match self {
            Ty::F16 | Ty::BF16 => Ty::F32,
            t => t,
        }
    }

    /// True for the float types.
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    /// True for the integer types.
    pub fn is_int(self) -> bool {
        matches!(self, Ty::I32 | Ty::I64)
    }

    /// Bytes per element in memory.
    pub fn size(self) -> u64 {
        match self {
            Ty::Bool => 1,
            Ty::F16 | Ty::BF16 => 2,
            Ty::I32 | Ty::F32 => 4,
            Ty::I64 | Ty::F64 => 8,
        }
    }

    /// The language dtype of the same name.
    pub fn from_dtype(d: tfmc_runtime::DType) -> Ty {
        use tfmc_runtime::DType as D;
        match d {
            D::F16 => Ty::F16,
            D::BF16 => Ty::BF16,
            D::F32 => Ty::F32,
            D::F64 => Ty::F64,
            D::I32 => Ty::I32,
            D::I64 => Ty::I64,
            D::Bool => Ty::Bool,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Bool => "bool",
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F16 => "f16",
            Ty::BF16 => "bf16",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
        })
    }
}

/// A variable: an index into [`Func::vars`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A buffer: an index into [`Func::bufs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Buf(pub u32);

/// A constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Const {
    /// A boolean.
    Bool(bool),
    /// An `i32`.
    I32(i32),
    /// An `i64`.
    I64(i64),
    /// An `f32`.
    F32(f32),
    /// An `f64`.
    F64(f64),
}

impl Const {
    /// Its type.
    pub fn ty(self) -> Ty {
        match self {
            Const::Bool(_) => Ty::Bool,
            Const::I32(_) => Ty::I32,
            Const::I64(_) => Ty::I64,
            Const::F32(_) => Ty::F32,
            Const::F64(_) => Ty::F64,
        }
    }
}

/// A unary operation; the result has the operand's type unless noted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-x` (integers wrap; the schedule checks overflow first).
    Neg,
    /// Logical not (`Bool`).
    Not,
    /// `|x|` (floats).
    Abs,
    /// `√x`.
    Sqrt,
    /// `⌊x⌋`.
    Floor,
    /// `⌈x⌉`.
    Ceil,
    /// Round half to even (floats).
    RoundEven,
    /// `e^x` through the C library (`exp`/`expf`); the schedule expands f32 `exp` inline.
    Exp,
    /// `2^x`.
    Exp2,
    /// `ln x`.
    Log,
    /// `log2 x`.
    Log2,
    /// `ln(1 + x)` (libm `log1p`).
    Log1p,
    /// `e^x - 1` (libm `expm1`).
    Expm1,
    /// `tanh x` (libm).
    Tanh,
    /// `erf x` (libm).
    Erf,
    /// `sin x`.
    Sin,
    /// `cos x`.
    Cos,
    /// True if `x` is NaN (result `Bool`).
    IsNan,
}

/// A binary operation on two operands of the same type; comparisons give `Bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `a + b` (integers wrap).
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (integers: truncating; never by 0 or `MIN / -1`, the schedule guards).
    Div,
    /// Remainder with the sign of `a` (integers: truncating; floats: `fmod`).
    Rem,
    /// Smaller (floats: NaN if either is NaN).
    Min,
    /// Larger (floats: NaN if either is NaN).
    Max,
    /// `a^b` (floats, libm `pow`).
    Pow,
    /// `atan2(a, b)` (floats, libm).
    Atan2,
    /// `a < b` (floats: ordered, false on NaN).
    Lt,
    /// `a <= b`.
    Le,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a == b` (floats: ordered).
    Eq,
    /// `a != b` (floats: unordered, true on NaN).
    Ne,
    /// Non-short-circuit `&` on `Bool`.
    And,
    /// Non-short-circuit `|` on `Bool`.
    Or,
    /// Shift left (integers; the amount is in range).
    Shl,
    /// True if `a + b` overflows the (integer) operand type (result `Bool`).
    AddOverflows,
    /// True if `a - b` overflows.
    SubOverflows,
    /// True if `a * b` overflows.
    MulOverflows,
}

impl BinOp {
    /// True if the result is `Bool` whatever the operand type.
    pub fn is_predicate(self) -> bool {
        use BinOp::*;
        matches!(self, Lt | Le | Gt | Ge | Eq | Ne | AddOverflows | SubOverflows | MulOverflows)
    }
}

/// An expression: pure (no side effects, no failure), evaluated where it stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant.
    Const(Const),
    /// The current value of a variable.
    Var(Var),
    /// Element `index` (an `I64` expression, in bounds: the schedule checks) of a buffer.
    Load {
        /// The buffer.
        buf: Buf,
        /// Element index.
        index: Box<Expr>,
    },
    /// A unary operation.
    Unary {
        /// The operation.
        op: UnOp,
        /// Operand.
        x: Box<Expr>,
    },
    /// A binary operation.
    Binary {
        /// The operation.
        op: BinOp,
        /// Left operand.
        a: Box<Expr>,
        /// Right operand (same type as `a`).
        b: Box<Expr>,
        /// May be reassociated (reduction accumulators only).
        reassoc: bool,
    },
    /// `if c then a else b`, both evaluated (`c` is `Bool`, `a` and `b` of one type).
    Select {
        /// Condition.
        c: Box<Expr>,
        /// Value if true.
        a: Box<Expr>,
        /// Value if false.
        b: Box<Expr>,
    },
    /// Numeric conversion to a value type (float → int truncates and saturates, NaN → 0;
    /// int → int sign-extends or truncates; `Bool` → number is 0/1; number → `Bool` is
    /// `!= 0`, true for NaN).
    Cast {
        /// Target type (never `F16`/`BF16`).
        to: Ty,
        /// Operand.
        x: Box<Expr>,
    },
    /// Reinterprets the bits (`I32` ↔ `F32`, `I64` ↔ `F64`).
    Bitcast {
        /// Target type.
        to: Ty,
        /// Operand.
        x: Box<Expr>,
    },
}

/// A sequence of statements.
pub type Block = Vec<Stmt>;

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `var = value`.
    Set {
        /// The variable.
        var: Var,
        /// Its new value (of the variable's type).
        value: Expr,
    },
    /// `buf[index] = value`.
    Store {
        /// The buffer.
        buf: Buf,
        /// Element index (`I64`, in bounds).
        index: Expr,
        /// The value (of the buffer's value type).
        value: Expr,
    },
    /// `for var in lo..hi { body }` (`I64`; empty when `hi <= lo`; `var` is not set after).
    For {
        /// Loop variable (`I64`).
        var: Var,
        /// First value.
        lo: Expr,
        /// End, exclusive (evaluated once).
        hi: Expr,
        /// Body.
        body: Block,
    },
    /// `for var in 0..n` run in parallel (see the module docs).
    Parallel {
        /// Iteration variable (`I64`).
        var: Var,
        /// Number of iterations (`I64`, evaluated once).
        n: Expr,
        /// Body.
        body: Block,
    },
    /// `for var in 0..n`, each iteration a block of `threads` threads running `body` together
    /// (GPU dialect only, see the module docs).
    BlockParallel {
        /// Block index (`I64`), the same for every thread of the block.
        var: Var,
        /// Number of blocks (`I64`, evaluated once).
        n: Expr,
        /// Threads per block (a positive multiple of 32).
        threads: u32,
        /// Body, run by every thread of the block.
        body: Block,
    },
    /// `if cond { then } else { els }`.
    If {
        /// Condition (`Bool`).
        cond: Expr,
        /// Taken when true.
        then: Block,
        /// Taken when false.
        els: Block,
    },
    /// Allocates heap buffer `buf` with `len` (`I64`) elements, zero-filled when `zeroed`
    /// (else with any contents: the schedule stores every element before reading it). Fails
    /// with [`FailKind::OutOfMemory`] when `len` is negative, its byte size overflows, or the
    /// allocation fails. Only at kernel level (not inside `Parallel`), once per buffer.
    Alloc {
        /// A [`BufKind::Heap`] buffer.
        buf: Buf,
        /// Number of elements.
        len: Expr,
        /// Zero-filled (`false`: any contents; the CPU backends then skip the zeroing).
        zeroed: bool,
    },
    /// Stops the kernel with this code (see [`fail_code`]).
    Fail {
        /// The code returned.
        code: u32,
    },
    /// Every thread of the block waits here until all have arrived (GPU dialect only, see
    /// the module docs).
    Barrier,
    /// A warp's tensor-core product (GPU dialect only, see the module docs).
    Mma(Box<Mma>),
    /// A register-blocked tile product `C = init + A·B` (see [`TileProduct`]).
    TileProduct(Box<TileProduct>),
}

/// The largest number of rows of a [`TileProduct`].
pub const TILE_MAX_ROWS: u32 = 6;

/// The largest number of columns of a [`TileProduct`].
pub const TILE_MAX_COLS: u32 = 64;

/// How the accumulators of a [`TileProduct`] start.
#[derive(Clone, Debug, PartialEq)]
pub enum TileInit {
    /// At 0: `C = A·B`.
    Zero,
    /// At the current `C`: `C += A·B`.
    Load,
    /// At `α_i · C[i][j]` with `α_i = scale[at + i]` (an `F32` buffer): the online-softmax
    /// rescale folded into the load.
    Scale {
        /// The buffer of row scales.
        buf: Buf,
        /// The index of row 0's scale (`I64`).
        at: Expr,
    },
}

/// What a [`TileProduct`] sums over `k` for each `(i, j)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileOp {
    /// `A[i][k] · B[k][j]`: a matrix product.
    Mul,
    /// `(A[i][k] - B[k][j])²`: squared Euclidean distances between `A`'s rows and `B`'s columns
    /// (L2 attention's logits), exact: no `‖a‖² − 2a·b + ‖b‖²` expansion and its cancellation.
    SquaredDifference,
}

/// `C[c0 + i·ldc + j] = init(i, j) + Σ_{k < K} A[a0 + i·lda + k] · B[b0 + k·ldb + j]` for
/// every row `i < m` and column `j < min(cols, n)`: the CPU sibling of [`Mma`], a product of an
/// `m × K` panel of `A` (rows `lda` apart, `k` contiguous) and a `K × n` panel of `B` (rows
/// `ldb` apart, `j` contiguous) into an `m × n` tile of `C` (rows `ldc` apart). `m` and `n` are
/// constants (`1..=TILE_MAX_ROWS`, `1..=TILE_MAX_COLS`) so a backend can keep the tile in
/// registers; `K` and `cols` are run-time values (`K <= 0` leaves `C = init`; columns from
/// `cols` on are neither read nor written). `A`, `B`, `C` (and a scale buffer) hold `F32`;
/// every element the product reads or writes is in bounds (the schedule guarantees), and `C`
/// overlaps neither `A` nor `B`. The sum over `k` is in an unspecified order and may be
/// contracted into FMAs. With [`TileOp::SquaredDifference`] the summand is
/// `(A[..] - B[..])²` instead of the product.
///
/// Its meaning is its scalar loop expansion ([`super::expand::expand_tile_products`]), which is
/// also how the backends without a vector lowering (Cranelift, NVPTX and its emulation) run
/// it; the LLVM CPU backend keeps the tile in vector registers.
#[derive(Clone, Debug, PartialEq)]
pub struct TileProduct {
    /// Rows of the tile (`1..=TILE_MAX_ROWS`).
    pub m: u32,
    /// Columns of the tile (`1..=TILE_MAX_COLS`).
    pub n: u32,
    /// Columns computed at run time (`I64`; at most `n` are).
    pub cols: Expr,
    /// The length of the sum (`I64`).
    pub k: Expr,
    /// `A`, its element 0 and its row stride (`I64`).
    pub a: Buf,
    /// Index of `A[0][0]`.
    pub a0: Expr,
    /// Row stride of `A`.
    pub lda: Expr,
    /// `A`'s stride along the sum: 1 for rows stored contiguously, the row count for a
    /// key-major tile (`A[i][k]` at `a0 + i·lda + k·ka`).
    pub ka: Expr,
    /// `B`, its element 0 and its row stride (`I64`).
    pub b: Buf,
    /// Index of `B[0][0]`.
    pub b0: Expr,
    /// Row stride of `B`.
    pub ldb: Expr,
    /// `C`, its element 0 and its row stride (`I64`).
    pub c: Buf,
    /// Index of `C[0][0]`.
    pub c0: Expr,
    /// Row stride of `C`.
    pub ldc: Expr,
    /// The accumulators' start.
    pub init: TileInit,
    /// The summand.
    pub op: TileOp,
}

impl TileProduct {
    /// Every index and size expression, in field order (the scale's index last).
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        let scale = match &self.init {
            TileInit::Scale { at, .. } => Some(at),
            _ => None,
        };
        [&self.cols, &self.k, &self.a0, &self.lda, &self.ka, &self.b0, &self.ldb, &self.c0, &self.ldc].into_iter().chain(scale)
    }

    /// Every buffer it reads or writes (`A`, `B`, `C`, then the scales).
    pub fn bufs(&self) -> impl Iterator<Item = Buf> {
        let scale = match &self.init {
            TileInit::Scale { buf, .. } => Some(*buf),
            _ => None,
        };
        [self.a, self.b, self.c].into_iter().chain(scale)
    }
}

/// The input format of a tensor-core product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmaKind {
    /// IEEE half inputs, `f32` accumulation (`mma...f32.f16.f16.f32`).
    F16,
    /// bfloat16 inputs, `f32` accumulation (`mma...f32.bf16.bf16.f32`, sm_80+).
    BF16,
}

impl MmaKind {
    /// The input element type.
    pub fn elem(self) -> Ty {
        match self {
            MmaKind::F16 => Ty::F16,
            MmaKind::BF16 => Ty::BF16,
        }
    }
}

/// `D = A·B + C` for one 16×8×16 tile, computed by the 32 threads of a warp together
/// (PTX `mma.sync.aligned.m16n8k16.row.col`). Each thread gives its fragment elements and
/// receives its part of `D`; with `l` the thread's lane (index mod 32), `g = l / 4`,
/// `t = l % 4`:
/// - `a[0..8]` = `A[g][2t]`, `A[g][2t+1]`, `A[g+8][2t]`, `A[g+8][2t+1]`, `A[g][2t+8]`,
///   `A[g][2t+9]`, `A[g+8][2t+8]`, `A[g+8][2t+9]` (`A` is 16×16, rows × k);
/// - `b[0..4]` = `B[2t][g]`, `B[2t+1][g]`, `B[2t+8][g]`, `B[2t+9][g]` (`B` is 16×8, k × cols);
/// - `c[0..4]` and `d[0..4]` = `C[g][2t]`, `C[g][2t+1]`, `C[g+8][2t]`, `C[g+8][2t+1]` (16×8).
///
/// `a` and `b` are `F32` expressions rounded to `kind` (nearest even) before the product;
/// the products are summed in at least `f32` precision, in an unspecified order. Every
/// thread of the block reaches an `Mma` at block-uniform control flow (as a barrier).
#[derive(Clone, Debug, PartialEq)]
pub struct Mma {
    /// Input format.
    pub kind: MmaKind,
    /// This thread's 8 elements of `A`.
    pub a: Vec<Expr>,
    /// Its 4 elements of `B`.
    pub b: Vec<Expr>,
    /// Its 4 elements of `C`.
    pub c: Vec<Expr>,
    /// The `F32` variables that receive its 4 elements of `D`.
    pub d: Vec<Var>,
}

impl Mma {
    /// Every operand expression (`a`, then `b`, then `c`).
    pub fn operands(&self) -> impl Iterator<Item = &Expr> {
        self.a.iter().chain(&self.b).chain(&self.c)
    }
}

/// Where a buffer lives.
#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// Argument `i` of the ABI's `bufs` array (inputs, then outputs).
    Arg(usize),
    /// Allocated by [`Stmt::Alloc`], freed on return.
    Heap,
    /// A fixed-size local array of this many elements, one per function or parallel
    /// iteration that uses it.
    Stack(u32),
    /// A fixed-size array of this many elements, one per block of a block parallel, shared by
    /// its threads (GPU dialect only, see the module docs).
    Shared(u32),
}

/// A buffer's declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct BufDecl {
    /// Name, for dumps and errors (`Q`, `O.acc`).
    pub name: String,
    /// Element type in memory.
    pub elem: Ty,
    /// Where it lives.
    pub kind: BufKind,
}

/// A variable's declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct VarDecl {
    /// Name, for dumps (`p`, `m.max`).
    pub name: String,
    /// Its type (a value type: never `F16`/`BF16`).
    pub ty: Ty,
}

pub use tfmc_runtime::manifest::FailKind;

/// The code a kernel returns for a failure of `kind` at site `site` (an index into
/// [`Func::sites`]): `kind | site << 8`. 0 means success.
pub fn fail_code(kind: FailKind, site: u32) -> u32 {
    kind as u32 | (site << 8)
}

/// One kernel, scheduled.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    /// Kernel name (the exported symbol is chosen by the backend's caller).
    pub name: String,
    /// Every variable.
    pub vars: Vec<VarDecl>,
    /// Every buffer.
    pub bufs: Vec<BufDecl>,
    /// Variables set on entry from `dims[k]` (`I64`), in ABI order.
    pub dims: Vec<Var>,
    /// Variables set on entry from `params[k]`, in ABI order (an `I64` slot is converted to
    /// an `I32`/`Bool` variable, an `F64` slot to an `F32` one).
    pub params: Vec<Var>,
    /// Number of argument buffers (`BufKind::Arg(0..n)`).
    pub n_args: usize,
    /// Human-readable descriptions of failure sites, indexed by a code's site.
    pub sites: Vec<String>,
    /// The thread-index variable (GPU dialect only, see the module docs), if the kernel has
    /// one.
    pub thread: Option<Var>,
    /// The body.
    pub body: Block,
}

impl Func {
    /// The type of `e`.
    pub fn ty(&self, e: &Expr) -> Ty {
        match e {
            Expr::Const(c) => c.ty(),
            Expr::Var(v) => self.vars[v.0 as usize].ty,
            Expr::Load { buf, .. } => self.bufs[buf.0 as usize].elem.value(),
            Expr::Unary { op: UnOp::IsNan, .. } => Ty::Bool,
            Expr::Unary { x, .. } => self.ty(x),
            Expr::Binary { op, a, .. } => {
                if op.is_predicate() {
                    Ty::Bool
                } else {
                    self.ty(a)
                }
            }
            Expr::Select { a, .. } => self.ty(a),
            Expr::Cast { to, .. } | Expr::Bitcast { to, .. } => *to,
        }
    }

    /// The declaration of `v`.
    pub fn var(&self, v: Var) -> &VarDecl {
        &self.vars[v.0 as usize]
    }

    /// The declaration of `b`.
    pub fn buf(&self, b: Buf) -> &BufDecl {
        &self.bufs[b.0 as usize]
    }
}

/// The GPU dialect's constructs found by kind (see the module docs).
pub mod gpu {
    use super::{BufKind, Func, Stmt};

    /// The first statement of `b` (pre-order, nested blocks included) that `f` maps to `Some`.
    fn find<T>(b: &[Stmt], f: &impl Fn(&Stmt) -> Option<T>) -> Option<T> {
        b.iter().find_map(|s| {
            f(s).or_else(|| match s {
                Stmt::For { body, .. } | Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => find(body, f),
                Stmt::If { then, els, .. } => find(then, f).or_else(|| find(els, f)),
                _ => None,
            })
        })
    }

    /// The threads per block of the first block parallel in `b`, if any (`validate::check_gpu`
    /// makes a kernel's block parallels agree).
    pub fn block_threads(b: &[Stmt]) -> Option<u32> {
        find(b, &|s| match s {
            Stmt::BlockParallel { threads, .. } => Some(*threads),
            _ => None,
        })
    }

    /// True if `f` uses any construct of the GPU dialect (a thread index, a shared buffer, a
    /// block parallel, a barrier or a tensor-core product).
    pub fn uses_dialect(f: &Func) -> bool {
        f.thread.is_some()
            || f.bufs.iter().any(|d| matches!(d.kind, BufKind::Shared(_)))
            || find(&f.body, &|s| matches!(s, Stmt::BlockParallel { .. } | Stmt::Barrier | Stmt::Mma(_)).then_some(())).is_some()
    }

    /// True if `b` contains a tensor-core product ([`super::Stmt::Mma`]).
    pub fn has_mma(b: &[Stmt]) -> bool {
        find(b, &|s| matches!(s, Stmt::Mma(_)).then_some(())).is_some()
    }
}
