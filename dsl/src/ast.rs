//! The syntax tree of a `.tfm` file, exactly as written (no name resolution).
//!
//! Invariants: every node that can be named in a diagnostic carries a [`Span`] into the
//! file it came from; nothing here has been checked (names may be undefined, shapes may
//! disagree). The checker in the `tfmc` crate turns this into a resolved program.

use crate::span::Span;

/// An identifier with the place it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The name as written.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// One parsed `.tfm` file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    /// Items in source order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `use "path.tfm"`.
    Use(UseItem),
    /// `param NAME: TYPE [= VALUE]`.
    Param(ParamItem),
    /// `reduction NAME(fields) { identity = ..., combine(a, b) { ... } }`.
    Reduction(ReductionItem),
    /// `kernel NAME(args) -> (outs) [where ...] { ... }`.
    Kernel(KernelItem),
}

/// `use "path.tfm"`.
#[derive(Clone, Debug, PartialEq)]
pub struct UseItem {
    /// The path as written, without quotes (relative to the importing file).
    pub path: String,
    /// Span of the string literal.
    pub span: Span,
}

/// A scalar type or tensor element type: the runtime's, so the language and the artifacts
/// it produces agree by construction (`f16 bf16 f32 f64 i32 i64 bool`).
pub use tfmc_runtime::DType;

/// A literal value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    /// Integer literal.
    Int(i64),
    /// Float literal (including `inf`).
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
}

/// `param NAME: TYPE [= VALUE]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamItem {
    /// `///` lines, without the slashes.
    pub docs: Vec<String>,
    /// Parameter name.
    pub name: Ident,
    /// Declared type.
    pub dtype: DType,
    /// Span of the type.
    pub dtype_span: Span,
    /// Default value, if any, with its span.
    pub default: Option<(Lit, Span)>,
    /// Span of the whole item.
    pub span: Span,
}

/// A field of a user reduction's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: Ident,
    /// Field type.
    pub dtype: DType,
}

/// `reduction NAME(fields) { identity = E  combine(a, b) { let ...; E } }`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReductionItem {
    /// `///` lines.
    pub docs: Vec<String>,
    /// Reduction name.
    pub name: Ident,
    /// State fields (at least one).
    pub fields: Vec<Field>,
    /// Identity state (a tuple when there are several fields).
    pub identity: Expr,
    /// Names of the two combined states.
    pub operands: (Ident, Ident),
    /// `let` bindings of the combine body, in order.
    pub lets: Vec<(Ident, Expr)>,
    /// Result state of the combine (a tuple when there are several fields).
    pub result: Expr,
    /// Span of the whole item.
    pub span: Span,
}

/// `NAME: DTYPE[DIMS]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// Tensor name.
    pub name: Ident,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub dims: Vec<Dim>,
    /// Span of the whole declaration.
    pub span: Span,
}

/// One dimension of a declared tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// Symbolic dimension, bound at run time.
    Named(Ident),
    /// Fixed size.
    Fixed(i64, Span),
    /// A product of two or more factors (`MP * PS`), each `Named` or `Fixed`: the size is
    /// derived from the factors' sizes, never bound on its own.
    Product(Vec<Dim>, Span),
}

impl Dim {
    /// Where the dimension was written.
    pub fn span(&self) -> Span {
        match self {
            Dim::Named(id) => id.span,
            Dim::Fixed(_, s) | Dim::Product(_, s) => *s,
        }
    }
}

/// `kernel NAME(args) -> (outs) [where F] { stmts }`.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelItem {
    /// `///` lines.
    pub docs: Vec<String>,
    /// Kernel name.
    pub name: Ident,
    /// Inputs.
    pub args: Vec<TensorDecl>,
    /// Outputs.
    pub outputs: Vec<TensorDecl>,
    /// Kernel-level filter, applied to every statement that binds its indices.
    pub filter: Option<Expr>,
    /// Body statements in order.
    pub body: Vec<Stmt>,
    /// Span of the whole item.
    pub span: Span,
}

/// A statement of a kernel body.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // assignments dominate; boxing them buys nothing
pub enum Stmt {
    /// `index x: DIM`.
    Index {
        /// Index name.
        name: Ident,
        /// Its range.
        range: Dim,
        /// Whole statement.
        span: Span,
    },
    /// `A[i..], B[i..] = RHS [where F]`.
    Assign(Assign),
    /// `X, Y = callee(A, B, P = v)`.
    Call(Call),
}

/// Left-hand side of an assignment: `T[i, j]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lhs {
    /// Defined tensor.
    pub tensor: Ident,
    /// Its index variables (plain names).
    pub indices: Vec<Ident>,
    /// Span of the whole `T[...]`.
    pub span: Span,
}

/// Right-hand side of an assignment.
#[derive(Clone, Debug, PartialEq)]
pub enum Rhs {
    /// An ordinary expression.
    Expr(Expr),
    /// `scan[t, init = I](BODY)`.
    Scan {
        /// The scanned index.
        index: Ident,
        /// Value read before the start.
        init: Expr,
        /// Recurrence body.
        body: Expr,
        /// Span of the whole scan.
        span: Span,
    },
}

/// An assignment statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    /// One or more defined tensors.
    pub lhs: Vec<Lhs>,
    /// The defining expression.
    pub rhs: Rhs,
    /// Statement-level filter.
    pub filter: Option<Expr>,
    /// Whole statement.
    pub span: Span,
}

/// A kernel call statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Tensors bound to the callee's outputs, in order.
    pub outputs: Vec<Ident>,
    /// Called kernel.
    pub callee: Ident,
    /// Positional tensor arguments.
    pub args: Vec<Ident>,
    /// `PARAM = value` overrides.
    pub params: Vec<(Ident, Expr)>,
    /// Whole statement.
    pub span: Span,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// True for `== != < <= > >=`.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `!x`
    Not,
}

/// An expression with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

impl Expr {
    /// The direct sub-expressions, in source order (subscripts, arguments, operands, a
    /// reduction's body then its filter).
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Lit(_) | ExprKind::Name(_) => Vec::new(),
            ExprKind::Access { subs, .. } => subs.iter().collect(),
            ExprKind::Field { base, .. } => vec![base],
            ExprKind::Call { args, .. } => args.iter().collect(),
            ExprKind::Cast { arg, .. } => vec![arg],
            ExprKind::Reduce { filter, body, .. } => body.iter().chain(filter.as_deref()).collect(),
            ExprKind::Unary(_, a) => vec![a],
            ExprKind::Binary(_, a, b) => vec![a, b],
            ExprKind::If(c, a, b) => vec![c, a, b],
            ExprKind::Tuple(xs) => xs.iter().collect(),
        }
    }
}

/// The expression forms.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Lit(Lit),
    /// A bare name: index, dim, param, rank-0 tensor or `let` binding.
    Name(Ident),
    /// `T[subs]`.
    Access {
        /// The tensor.
        tensor: Ident,
        /// Subscript expressions.
        subs: Vec<Expr>,
    },
    /// `x.field` (inside a reduction's combine).
    Field {
        /// The state.
        base: Box<Expr>,
        /// The field name.
        field: Ident,
    },
    /// `f(args)`: an elementwise function.
    Call {
        /// Function name.
        func: Ident,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `f32(x)`.
    Cast {
        /// Target type.
        dtype: DType,
        /// Operand.
        arg: Box<Expr>,
    },
    /// `op[i, j where F](body, ...)`.
    Reduce {
        /// `sum`, `max`, `min`, `prod` or a user reduction.
        op: Ident,
        /// Reduced indices.
        indices: Vec<Ident>,
        /// Reduction-level filter.
        filter: Option<Box<Expr>>,
        /// One expression per state field (one for built-ins).
        body: Vec<Expr>,
    },
    /// Unary operator.
    Unary(UnOp, Box<Expr>),
    /// Binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if c then a else b`.
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `(a, b, ...)` with at least two elements (parentheses alone are dropped).
    Tuple(Vec<Expr>),
}
