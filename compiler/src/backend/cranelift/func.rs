//! One Cranelift function under construction: [`Fx`] wraps the `FunctionBuilder` with the
//! kernel's KIR, a Cranelift `Variable` per KIR variable (SSA construction is the frontend's
//! job), where each buffer's base pointer comes from, calls to external functions, and typed
//! element loads and stores.
//!
//! Representations (see `kir`'s module docs): `Bool` values are `i8` 0/1 (what `icmp`/`fcmp`
//! give) and one byte 0/1 in memory (loads test `!= 0`); `F16`/`BF16` elements are 16-bit
//! integers converted to and from `f32` by [`super::half`]; every other type is its Cranelift
//! type. Pointers are `i64` (x86-64).
//!
//! Invariants: the builder is always positioned in an unfilled block between statements (after
//! a terminator the translation continues in a fresh, sealed, unreachable block); every block
//! is sealed once its last predecessor is known.

use std::collections::HashMap;

use cranelift_codegen::ir::{self, Block, FuncRef, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Type, Value, types};
use cranelift_frontend::{FuncInstBuilder, FunctionBuilder, Variable};
use cranelift_module::{FuncId, Module};

use super::CraneliftError;
use super::jit::Cx;
use crate::schedule::kir::{Block as KBlock, Buf, BufKind, Func, Ty, Var};

/// The pointer type.
pub(super) const PTR: Type = types::I64;

/// The register type of values of `t` (`F16`/`BF16` values are `f32`).
pub(super) fn clif_ty(t: Ty) -> Type {
    match t {
        Ty::Bool => types::I8,
        Ty::I32 => types::I32,
        Ty::I64 => types::I64,
        Ty::F32 | Ty::F16 | Ty::BF16 => types::F32,
        Ty::F64 => types::F64,
    }
}

/// Flags of every element access: KIR indices are in bounds (the schedule checks).
pub(super) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// A buffer's memory, as a key: argument buffers that share an index are one memory; heap and
/// stack buffers are their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum MemKey {
    /// Argument `i` of the ABI.
    Arg(usize),
    /// A heap or stack buffer.
    Local(Buf),
}

/// The memory of `b` in `f`.
pub(super) fn mem_key(f: &Func, b: Buf) -> MemKey {
    match f.buf(b).kind {
        BufKind::Arg(i) => MemKey::Arg(i),
        // Shared buffers (GPU dialect) never reach a CPU backend (`validate::check`).
        BufKind::Heap | BufKind::Stack(_) | BufKind::Shared(_) => MemKey::Local(b),
    }
}

/// Where a buffer's base pointer comes from in the current function.
#[derive(Clone, Copy)]
pub(super) enum BufBase {
    /// A pointer value defined on entry (an argument, a captured pointer).
    Ptr(Value),
    /// A heap buffer of the kernel function: the variable holding its pointer (null until
    /// allocated).
    Heap(Variable),
    /// A stack buffer of this function.
    Stack(StackSlot),
}

/// What kind of function is being built.
pub(super) enum FnKind {
    /// The packed entry, which holds the kernel: `exit` takes the return code (`i32`) as its
    /// parameter and frees the heap buffers; `err` is the error slot parallel bodies share.
    Kernel { exit: Block, err: StackSlot },
    /// An outlined parallel body: a failure is recorded in `*err` (first one wins), then
    /// leaves through `exit`.
    Body { err: Value, exit: Block },
}

/// A parallel body to outline once the kernel function is done.
pub(super) struct Job<'k> {
    /// Its function in the module.
    pub(super) id: FuncId,
    /// The iteration variable.
    pub(super) var: Var,
    /// The body.
    pub(super) body: &'k KBlock,
    /// Captured buffer memories, in context order.
    pub(super) keys: Vec<MemKey>,
    /// Captured variables, in context order.
    pub(super) vars: Vec<Var>,
}

/// One function under construction (see the module docs).
pub(super) struct Fx<'a, 'k> {
    pub(super) b: FunctionBuilder<'a>,
    pub(super) cx: &'a mut Cx,
    pub(super) f: &'k Func,
    pub(super) symbol: &'k str,
    vars: Vec<Variable>,
    pub(super) bufs: HashMap<Buf, BufBase>,
    pub(super) kind: FnKind,
    refs: HashMap<FuncId, FuncRef>,
    /// Parallel bodies met so far (kernel function only).
    pub(super) jobs: Vec<Job<'k>>,
}

impl<'a, 'k> Fx<'a, 'k> {
    /// Wraps `b` (positioned in its entry block), declaring a variable per KIR variable.
    pub(super) fn new(mut b: FunctionBuilder<'a>, cx: &'a mut Cx, f: &'k Func, symbol: &'k str, kind: FnKind) -> Self {
        let vars = f.vars.iter().map(|d| b.declare_var(clif_ty(d.ty))).collect();
        Fx { b, cx, f, symbol, vars, bufs: HashMap::new(), kind, refs: HashMap::new(), jobs: Vec::new() }
    }

    /// The instruction builder at the current position.
    pub(super) fn ins(&mut self) -> FuncInstBuilder<'_, 'a> {
        self.b.ins()
    }

    /// A broken backend invariant, in this kernel.
    pub(super) fn internal(&self, message: impl Into<String>) -> CraneliftError {
        CraneliftError::Internal { kernel: self.f.name.clone(), message: message.into() }
    }

    fn variable(&self, v: Var) -> Result<Variable, CraneliftError> {
        self.vars.get(v.0 as usize).copied().ok_or_else(|| self.internal(format!("variable {} out of range", v.0)))
    }

    /// The current value of KIR variable `v`.
    pub(super) fn use_var(&mut self, v: Var) -> Result<Value, CraneliftError> {
        let var = self.variable(v)?;
        self.use_variable(var)
    }

    /// The current value of Cranelift variable `var`.
    pub(super) fn use_variable(&mut self, var: Variable) -> Result<Value, CraneliftError> {
        self.b.try_use_var(var).map_err(|e| self.internal(format!("using {var:?}: {e}")))
    }

    /// Sets KIR variable `v` to `x`.
    pub(super) fn def_var(&mut self, v: Var, x: Value) -> Result<(), CraneliftError> {
        let var = self.variable(v)?;
        self.def_variable(var, x)
    }

    /// Sets Cranelift variable `var` to `x`.
    pub(super) fn def_variable(&mut self, var: Variable, x: Value) -> Result<(), CraneliftError> {
        self.b.try_def_var(var, x).map_err(|e| self.internal(format!("setting {var:?}: {e}")))
    }

    /// A constant of integer type `ty` (`i8` for `Bool`).
    pub(super) fn iconst(&mut self, ty: Type, v: i64) -> Value {
        // Narrow constants are stored zero-extended (the verifier's rule).
        let bits = match ty.bits() {
            8 => v as u8 as i64,
            16 => v as u16 as i64,
            32 => v as u32 as i64,
            _ => v,
        };
        self.b.ins().iconst(ty, bits)
    }

    /// Calls external function `name` (declared on first use) and returns its result, if any.
    pub(super) fn call(&mut self, name: &str, params: &[Type], ret: Option<Type>, args: &[Value]) -> Result<Option<Value>, CraneliftError> {
        let id = self.cx.import(name, params, ret)?;
        let fref = self.func_ref(id);
        let inst = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(inst).first().copied())
    }

    /// Calls external function `name` returning a value.
    pub(super) fn call_value(&mut self, name: &str, params: &[Type], ret: Type, args: &[Value]) -> Result<Value, CraneliftError> {
        self.call(name, params, Some(ret), args)?.ok_or_else(|| self.internal(format!("call to '{name}' without a result")))
    }

    /// This function's reference to module function `id`.
    pub(super) fn func_ref(&mut self, id: FuncId) -> FuncRef {
        if let Some(&r) = self.refs.get(&id) {
            return r;
        }
        let r = self.cx.module.declare_func_in_func(id, self.b.func);
        self.refs.insert(id, r);
        r
    }

    /// A new stack slot of `bytes` bytes, 16-byte aligned.
    pub(super) fn stack_slot(&mut self, bytes: u64, what: &str) -> Result<StackSlot, CraneliftError> {
        let size = u32::try_from(bytes).map_err(|_| CraneliftError::StackBuffer {
            kernel: self.f.name.clone(),
            buffer: what.to_string(),
            bytes,
        })?;
        Ok(self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, size, 4)))
    }

    /// The base pointer of buffer `buf` in this function (a stack array is created on first
    /// use).
    pub(super) fn base(&mut self, buf: Buf) -> Result<Value, CraneliftError> {
        let loc = match self.bufs.get(&buf) {
            Some(&l) => l,
            None => {
                let d = self.f.buf(buf);
                let BufKind::Stack(n) = d.kind else {
                    return Err(self.internal(format!("buffer '{}' is not available in this function", d.name)));
                };
                let slot = self.stack_slot(u64::from(n) * d.elem.size(), &d.name)?;
                self.bufs.insert(buf, BufBase::Stack(slot));
                BufBase::Stack(slot)
            }
        };
        Ok(match loc {
            BufBase::Ptr(p) => p,
            BufBase::Heap(var) => self.use_variable(var)?,
            BufBase::Stack(slot) => self.b.ins().stack_addr(PTR, slot, 0),
        })
    }

    /// The address of element `index` (an `i64`) of `buf`.
    pub(super) fn addr(&mut self, buf: Buf, index: Value) -> Result<Value, CraneliftError> {
        let base = self.base(buf)?;
        let shift = self.f.buf(buf).elem.size().trailing_zeros();
        let off = if shift == 0 { index } else { self.b.ins().ishl_imm_s(index, i64::from(shift)) };
        Ok(self.b.ins().iadd(base, off))
    }

    /// Loads element `index` of `buf` as a value of its value type.
    pub(super) fn load_elem(&mut self, buf: Buf, index: Value) -> Result<Value, CraneliftError> {
        let elem = self.f.buf(buf).elem;
        let a = self.addr(buf, index)?;
        let ins = self.b.ins();
        Ok(match elem {
            Ty::Bool => {
                let byte = ins.load(types::I8, mem(), a, 0);
                self.b.ins().icmp_imm_s(ir::condcodes::IntCC::NotEqual, byte, 0)
            }
            Ty::F16 => {
                let h = ins.uload16(types::I32, mem(), a, 0);
                self.f16_to_f32(h)
            }
            Ty::BF16 => {
                let h = ins.uload16(types::I32, mem(), a, 0);
                self.bf16_to_f32(h)
            }
            t => ins.load(clif_ty(t), mem(), a, 0),
        })
    }

    /// Stores value `x` into element `index` of `buf`.
    pub(super) fn store_elem(&mut self, buf: Buf, index: Value, x: Value) -> Result<(), CraneliftError> {
        let elem = self.f.buf(buf).elem;
        let a = self.addr(buf, index)?;
        match elem {
            Ty::F16 => {
                let h = self.f32_to_f16(x);
                self.b.ins().istore16(mem(), h, a, 0);
            }
            Ty::BF16 => {
                let h = self.f32_to_bf16(x);
                self.b.ins().istore16(mem(), h, a, 0);
            }
            // Bool is an i8 0/1 already; the rest store as they are.
            _ => {
                self.b.ins().store(mem(), x, a, 0);
            }
        }
        Ok(())
    }

    /// A new block.
    pub(super) fn block(&mut self) -> Block {
        self.b.create_block()
    }

    /// Continues in a fresh unreachable block after the current one was terminated.
    pub(super) fn dead_block(&mut self) {
        let bb = self.b.create_block();
        self.b.switch_to_block(bb);
        self.b.seal_block(bb);
    }
}
