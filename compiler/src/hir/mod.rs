//! The checked program (HIR): every name resolved to an id, every expression typed, every
//! filter attached to the scope it restricts, implicit conversions made explicit.
//!
//! Invariants the checker establishes and every consumer (interpreter, lowering) may assume:
//! - ids index the vectors of their owner (`TensorId` into `Kernel::tensors`, ...);
//! - both operands of an arithmetic `Binary` have the expression's dtype; both operands of a
//!   comparison have the same dtype and the result is `bool`; `&&`/`||`/`!` are on `bool`;
//!   an `If` has a `bool` condition and branches of the expression's dtype; subscripts and
//!   `Index`/`Dim` expressions are `i64`; implicit conversions are explicit `Cast`s;
//! - every tensor is defined (by an `Assign` or `Call`) before any statement reads it, except a
//!   scan's own look-back reads, which are `ScanPrev`;
//! - a statement's `filters` mention only its own indices (and dims, params, tensors); a
//!   `Reduce`'s filters mention at least one of its reduced indices;
//! - each output tensor is defined exactly once; inputs are never assigned.

pub mod print;

pub use tfm_dsl::ast::{BinOp, DType, Lit, UnOp};
use tfm_dsl::{SourceMap, Span};

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);
        impl $name {
            /// The id as a vector index.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id_type!(
    /// A kernel of the program.
    KernelId
);
id_type!(
    /// A `param` of the program.
    ParamId
);
id_type!(
    /// A user-defined reduction of the program.
    ReductionId
);
id_type!(
    /// A tensor (input, output or local) of one kernel.
    TensorId
);
id_type!(
    /// A symbolic dimension of one kernel.
    DimId
);
id_type!(
    /// An index variable of one kernel (one id per name).
    IndexId
);

/// A whole checked program: the entry file and everything it `use`s.
#[derive(Clone, Debug)]
pub struct Program {
    /// Text of every file, for diagnostics.
    pub sources: SourceMap,
    /// All params, by `ParamId`.
    pub params: Vec<Param>,
    /// All user reductions, by `ReductionId`.
    pub reductions: Vec<Reduction>,
    /// All kernels, by `KernelId`.
    pub kernels: Vec<Kernel>,
}

impl Program {
    /// The kernel called `name`.
    pub fn kernel(&self, name: &str) -> Option<(KernelId, &Kernel)> {
        self.kernels.iter().enumerate().find(|(_, k)| k.name == name).map(|(i, k)| (KernelId(i as u32), k))
    }

    /// The param called `name`.
    pub fn param(&self, name: &str) -> Option<(ParamId, &Param)> {
        self.params.iter().enumerate().find(|(_, p)| p.name == name).map(|(i, p)| (ParamId(i as u32), p))
    }
}

/// `param NAME: TYPE [= DEFAULT]`.
#[derive(Clone, Debug)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Type (`i32 i64 f32 f64 bool`).
    pub dtype: DType,
    /// Default value, converted to `dtype`.
    pub default: Option<Lit>,
    /// Doc comment lines.
    pub docs: Vec<String>,
    /// Declaration.
    pub span: Span,
}

/// A user-defined associative reduction.
///
/// Expressions in `identity` use no locals. In `lets` and `result`, `Local(i)` for
/// `i < n` is field `i` of the left operand, `n <= i < 2n` field `i - n` of the right
/// operand, and `2n + j` the `j`-th `let`, where `n = fields.len()`.
#[derive(Clone, Debug)]
pub struct Reduction {
    /// Name.
    pub name: String,
    /// Doc comment lines.
    pub docs: Vec<String>,
    /// State fields: name and dtype.
    pub fields: Vec<(String, DType)>,
    /// Identity state, one expression per field.
    pub identity: Vec<Expr>,
    /// `let` bindings, in order.
    pub lets: Vec<Expr>,
    /// Combined state, one expression per field.
    pub result: Vec<Expr>,
    /// Declaration.
    pub span: Span,
}

/// The extent of a tensor dimension or index range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extent {
    /// A symbolic dimension, bound at run time.
    Dim(DimId),
    /// A fixed size.
    Const(i64),
}

/// A symbolic dimension.
#[derive(Clone, Debug)]
pub struct DimInfo {
    /// Its name (`B`, `M`, ...; a product's name is its factors joined by `*`: `MP*PS`).
    pub name: String,
    /// First place it was declared.
    pub span: Span,
    /// For a dim written as a product (`index m: MP * PS`): its factors. Its size is always
    /// derived from theirs, never bound on its own (where an input has it, the input's size is
    /// checked against the product).
    pub product: Option<DimProduct>,
}

/// The factors of a product dim: `scale × Π factors`.
///
/// Invariant: the factors are dims without a product of their own (in written order, repeats
/// allowed), each the size of some input dimension on its own; there are at least two, or one
/// with `scale != 1`; `scale >= 0`. A kernel has one product dim per distinct product
/// ([`DimProduct::same_as`]: `MP * PS` and `PS * MP` are one dim).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DimProduct {
    /// The symbolic factors, as first written.
    pub factors: Vec<DimId>,
    /// The product of the literal factors.
    pub scale: i64,
}

impl DimProduct {
    /// True if both are the same product (the factors in any order).
    pub fn same_as(&self, other: &DimProduct) -> bool {
        let sorted = |p: &DimProduct| {
            let mut f = p.factors.clone();
            f.sort();
            f
        };
        self.scale == other.scale && sorted(self) == sorted(other)
    }
}

/// What a tensor is to its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The `n`-th argument.
    Input(usize),
    /// The `n`-th output.
    Output(usize),
    /// An intermediate.
    Local,
}

/// A tensor of a kernel.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Extents, outermost first (empty for a scalar).
    pub shape: Vec<Extent>,
    /// Input, output or local.
    pub role: Role,
    /// Declaration or first definition.
    pub span: Span,
}

/// An index variable.
#[derive(Clone, Debug)]
pub struct IndexInfo {
    /// Name.
    pub name: String,
    /// The range `0..extent`.
    pub extent: Extent,
    /// First use or declaration.
    pub span: Span,
}

/// A checked kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Name.
    pub name: String,
    /// Doc comment lines.
    pub docs: Vec<String>,
    /// Symbolic dims, by `DimId`.
    pub dims: Vec<DimInfo>,
    /// All tensors, by `TensorId`.
    pub tensors: Vec<TensorInfo>,
    /// Index variables, by `IndexId`.
    pub indices: Vec<IndexInfo>,
    /// Arguments in order.
    pub inputs: Vec<TensorId>,
    /// Outputs in order.
    pub outputs: Vec<TensorId>,
    /// Params the kernel (or a kernel it calls) reads.
    pub params_used: Vec<ParamId>,
    /// Statements in execution order.
    pub stmts: Vec<Stmt>,
    /// Declaration.
    pub span: Span,
    /// The kernel's name where it is declared.
    pub name_span: Span,
}

impl Kernel {
    /// The dims bound from the inputs (every dim except the products, which are derived).
    pub fn free_dims(&self) -> impl Iterator<Item = &DimInfo> {
        self.dims.iter().filter(|d| d.product.is_none())
    }
}

/// A statement.
#[derive(Clone, Debug)]
pub enum Stmt {
    /// Defines `targets` over `indices` (the iteration space of the statement).
    Assign(Assign),
    /// Runs another kernel on whole tensors.
    Call(Call),
}

/// `T[indices] = rhs where filters`.
#[derive(Clone, Debug)]
pub struct Assign {
    /// Defined tensors: one, or one per field of a multi-field user reduction.
    pub targets: Vec<TensorId>,
    /// Left-hand indices, in the tensors' dimension order.
    pub indices: Vec<IndexId>,
    /// Filters on the left-hand iteration space (all must hold for a point to exist).
    pub filters: Vec<Expr>,
    /// The definition.
    pub rhs: Rhs,
    /// The statement.
    pub span: Span,
}

/// Right-hand side of an assignment.
#[derive(Clone, Debug)]
pub enum Rhs {
    /// One target: its value.
    Expr(Expr),
    /// Several targets: the fields of a user reduction, in order.
    Tuple(Reduce),
    /// One target defined by a recurrence along `index` (a member of the left-hand indices).
    Scan {
        /// The scanned index.
        index: IndexId,
        /// Value of a look-back read before the start; does not use `index`.
        init: Expr,
        /// The recurrence; reads the target at earlier points through `ScanPrev`.
        body: Expr,
    },
}

/// A reduction over `indices` of `body`.
#[derive(Clone, Debug)]
pub struct Reduce {
    /// The combiner.
    pub op: ReduceOp,
    /// Reduced indices (outermost first).
    pub indices: Vec<IndexId>,
    /// Filters on the reduction's iteration space.
    pub filters: Vec<Expr>,
    /// One expression per state field (one for built-ins).
    pub body: Vec<Expr>,
}

/// A reduction's combiner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// `+`, identity 0.
    Sum,
    /// `*`, identity 1.
    Prod,
    /// `max`, identity -inf (integer minimum for integers).
    Max,
    /// `min`, identity +inf (integer maximum for integers).
    Min,
    /// A user reduction.
    User(ReductionId),
}

/// `outputs = callee(args, params)`.
#[derive(Clone, Debug)]
pub struct Call {
    /// Called kernel.
    pub callee: KernelId,
    /// Caller tensors passed as the callee's inputs, in order.
    pub args: Vec<TensorId>,
    /// Caller tensors receiving the callee's outputs, in order.
    pub outputs: Vec<TensorId>,
    /// Param overrides for the duration of the call (value has the param's dtype).
    pub params: Vec<(ParamId, Expr)>,
    /// The statement.
    pub span: Span,
}

/// A typed expression.
#[derive(Clone, Debug)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Its type.
    pub dtype: DType,
    /// Where it was written.
    pub span: Span,
}

/// Expression forms.
#[derive(Clone, Debug)]
pub enum ExprKind {
    /// A constant of the expression's dtype.
    Lit(Lit),
    /// Current value of an index variable (i64).
    Index(IndexId),
    /// Size of a symbolic dimension (i64).
    Dim(DimId),
    /// A param's value.
    Param(ParamId),
    /// An element of a tensor (no subscripts for rank 0).
    Read {
        /// The tensor.
        tensor: TensorId,
        /// One i64 expression per dimension.
        subs: Vec<Expr>,
    },
    /// In a scan body: the target at `scan index - offset`, other indices unchanged.
    ScanPrev {
        /// The scan's target.
        tensor: TensorId,
        /// How far back (≥ 1).
        offset: i64,
    },
    /// In a user reduction: an operand field or a `let` (see [`Reduction`]).
    Local(usize),
    /// Unary operator.
    Unary(UnOp, Box<Expr>),
    /// Binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if c then a else b`.
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// An elementwise function; float arguments of the expression's dtype.
    Call(Func, Vec<Expr>),
    /// Conversion of the operand to the expression's dtype.
    Cast(Box<Expr>),
    /// A reduction; for a user reduction, the value is field 0 (single-field reductions only).
    Reduce(Box<Reduce>),
}

/// Built-in elementwise functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    /// e^x
    Exp,
    /// 2^x
    Exp2,
    /// ln x
    Log,
    /// log2 x
    Log2,
    /// ln(1 + x)
    Log1p,
    /// √x
    Sqrt,
    /// 1/√x
    Rsqrt,
    /// |x| (also on integers)
    Abs,
    /// -x (also on integers)
    Neg,
    /// -1, 0 or 1 (also on integers)
    Sign,
    /// ⌊x⌋
    Floor,
    /// ⌈x⌉
    Ceil,
    /// tanh x
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// max(x, 0) (also on integers)
    Relu,
    /// x·Φ(x) (erf form)
    Gelu,
    /// x if x > 0 else e^x - 1
    Elu,
    /// x·sigmoid(x)
    Silu,
    /// ln(1 + e^x)
    Softplus,
    /// error function
    Erf,
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// x^y
    Pow,
    /// smaller of two (also on integers)
    Min,
    /// larger of two (also on integers)
    Max,
    /// atan2(y, x)
    Atan2,
}

impl Func {
    /// Looks a function up by its `.tfm` name.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Every function.
    pub const ALL: [Func; 26] = [
        Func::Exp,
        Func::Exp2,
        Func::Log,
        Func::Log2,
        Func::Log1p,
        Func::Sqrt,
        Func::Rsqrt,
        Func::Abs,
        Func::Neg,
        Func::Sign,
        Func::Floor,
        Func::Ceil,
        Func::Tanh,
        Func::Sigmoid,
        Func::Relu,
        Func::Gelu,
        Func::Elu,
        Func::Silu,
        Func::Softplus,
        Func::Erf,
        Func::Sin,
        Func::Cos,
        Func::Pow,
        Func::Min,
        Func::Max,
        Func::Atan2,
    ];

    /// The `.tfm` name.
    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Exp2 => "exp2",
            Func::Log => "log",
            Func::Log2 => "log2",
            Func::Log1p => "log1p",
            Func::Sqrt => "sqrt",
            Func::Rsqrt => "rsqrt",
            Func::Abs => "abs",
            Func::Neg => "neg",
            Func::Sign => "sign",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
            Func::Tanh => "tanh",
            Func::Sigmoid => "sigmoid",
            Func::Relu => "relu",
            Func::Gelu => "gelu",
            Func::Elu => "elu",
            Func::Silu => "silu",
            Func::Softplus => "softplus",
            Func::Erf => "erf",
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Pow => "pow",
            Func::Min => "min",
            Func::Max => "max",
            Func::Atan2 => "atan2",
        }
    }

    /// Number of arguments.
    pub fn arity(self) -> usize {
        match self {
            Func::Pow | Func::Min | Func::Max | Func::Atan2 => 2,
            _ => 1,
        }
    }

    /// True if the function also applies to integers (result of the same integer type).
    pub fn accepts_int(self) -> bool {
        matches!(self, Func::Abs | Func::Neg | Func::Sign | Func::Relu | Func::Min | Func::Max)
    }
}
