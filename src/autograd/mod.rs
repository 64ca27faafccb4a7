//! The reverse-mode tape.
//!
//! Each op that has an input needing a gradient records a [`Node`]: a sequence number (the
//! order of execution), edges to its inputs, and a backward closure that owns exactly the
//! tensors it saved. [`backward`] walks the nodes reachable from the loss in reverse
//! execution order, accumulating the gradient of every node output; a node's saved tensors
//! and its output gradient are dropped as soon as it has run, so intermediates are freed as
//! early as possible. [`backward_wrt`] restricts the walk to the nodes that lie on a path to
//! the requested tensors, and asks each node only for the input gradients on such a path
//! (VAT's power iteration needs the input perturbation's gradient and no weight gradient).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Computes the input gradients from the output gradient. `needed[i]` says whether input
/// `i`'s gradient is wanted; the closure may return `None` for the others.
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

pub(crate) enum Edge {
    Node(Arc<Node>),
    Leaf(u64),
}

pub struct Node {
    seq: u64,
    name: &'static str,
    inputs: Vec<Option<Edge>>,
    backward: Mutex<Option<BackwardFn>>,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record themselves on the tape on this thread.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Run `f` without recording anything on the tape.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let prev = GRAD_ENABLED.with(|g| g.replace(false));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _r = Restore(prev);
    f()
}

/// Attach a node to `out` when recording is on and an input needs a gradient; otherwise
/// return `out` unchanged (and drop the closure with everything it saved).
pub fn record(
    name: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    if !grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return out;
    }
    let edges = inputs
        .iter()
        .map(|t| match t.node() {
            Some(n) => Some(Edge::Node(n.clone())),
            None if t.is_grad_leaf() => Some(Edge::Leaf(t.id())),
            None => None,
        })
        .collect();
    let node = Arc::new(Node {
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        name,
        inputs: edges,
        backward: Mutex::new(Some(Box::new(backward))),
    });
    let inner = &out.0;
    Tensor(Arc::new(crate::tensor::Inner {
        id: inner.id,
        shape: inner.shape.clone(),
        dtype: inner.dtype,
        storage: inner.storage.clone(),
        gpu: inner.gpu.clone(),
        requires_grad: false,
        node: Some(node),
    }))
}

/// Gradients of the leaves, keyed by tensor identity.
#[derive(Default, Debug)]
pub struct Grads {
    map: HashMap<u64, Tensor>,
}

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Gradients of `loss` (a single element) with respect to every leaf that wants one.
pub fn backward(loss: &Tensor) -> Result<Grads> {
    run(loss, None, None)
}

/// Gradients of `loss` with respect to `wrt` only (leaves marked with `with_grad`); nodes
/// that do not lead to them are not run, inputs off the path get no gradient computed.
pub fn backward_wrt(loss: &Tensor, wrt: &[&Tensor]) -> Result<Grads> {
    for t in wrt {
        if !t.is_grad_leaf() {
            return Err(Error::op(
                "backward_wrt",
                format!("{t:?} is not a leaf marked with_grad()"),
            ));
        }
    }
    let ids: HashSet<u64> = wrt.iter().map(|t| t.id()).collect();
    run(loss, Some(&ids), None)
}

/// Backward from `out` with an explicit upstream gradient (same shape as `out`).
pub fn backward_with(out: &Tensor, upstream: &Tensor) -> Result<Grads> {
    run(out, None, Some(upstream))
}

fn run(root: &Tensor, wrt: Option<&HashSet<u64>>, upstream: Option<&Tensor>) -> Result<Grads> {
    let mut grads = Grads::default();
    let seed = match upstream {
        Some(u) => {
            if u.shape() != root.shape() {
                return Err(Error::op(
                    "backward",
                    format!("upstream {:?} for output {:?}", u.shape(), root.shape()),
                ));
            }
            u.clone()
        }
        None => {
            if root.numel() != 1 {
                return Err(Error::op(
                    "backward",
                    format!("loss must have one element, got {:?}", root.shape()),
                ));
            }
            Tensor::full(root.gpu(), root.shape(), 1.0)?
        }
    };
    let Some(root_node) = root.node().cloned() else {
        if root.is_grad_leaf() && wrt.is_none_or(|w| w.contains(&root.id())) {
            grads.map.insert(root.id(), seed);
        }
        return Ok(grads);
    };

    // Every node reachable from the root, and whether it leads to a wanted leaf.
    let mut nodes: HashMap<u64, Arc<Node>> = HashMap::new();
    let mut stack = vec![root_node.clone()];
    while let Some(n) = stack.pop() {
        if nodes.insert(n.seq, n.clone()).is_some() {
            continue;
        }
        for e in n.inputs.iter().flatten() {
            if let Edge::Node(m) = e {
                if !nodes.contains_key(&m.seq) {
                    stack.push(m.clone());
                }
            }
        }
    }
    let mut order: Vec<u64> = nodes.keys().copied().collect();
    order.sort_unstable();
    let wanted_leaf = |id: u64| wrt.is_none_or(|w| w.contains(&id));
    // Inputs come before their users in execution order, so one ascending pass settles
    // which nodes lead to a wanted leaf.
    let mut leads: HashSet<u64> = HashSet::new();
    for &s in &order {
        let n = &nodes[&s];
        let l = n.inputs.iter().flatten().any(|e| match e {
            Edge::Leaf(id) => wanted_leaf(*id),
            Edge::Node(m) => leads.contains(&m.seq),
        });
        if l {
            leads.insert(s);
        }
    }

    let mut pending: HashMap<u64, Tensor> = HashMap::new();
    pending.insert(root_node.seq, seed);
    for &s in order.iter().rev() {
        let Some(g) = pending.remove(&s) else {
            continue;
        };
        if !leads.contains(&s) {
            continue;
        }
        let node = nodes.remove(&s).expect("collected");
        let needed: Vec<bool> = node
            .inputs
            .iter()
            .map(|e| match e {
                Some(Edge::Leaf(id)) => wanted_leaf(*id),
                Some(Edge::Node(m)) => leads.contains(&m.seq),
                None => false,
            })
            .collect();
        let f = node.backward.lock().unwrap().take().ok_or_else(|| {
            Error::op(
                node.name,
                "backward through this op a second time (its saved tensors are freed)",
            )
        })?;
        // Backward runs off the tape: gradients are plain values.
        let gins = no_grad(|| f(&g, &needed))?;
        drop(g);
        if gins.len() != node.inputs.len() {
            return Err(Error::op(
                node.name,
                format!(
                    "backward returned {} gradients for {} inputs",
                    gins.len(),
                    node.inputs.len()
                ),
            ));
        }
        for ((e, gi), need) in node.inputs.iter().zip(gins).zip(&needed) {
            let (Some(e), Some(gi), true) = (e, gi, *need) else {
                continue;
            };
            match e {
                Edge::Leaf(id) => accumulate(&mut grads.map, *id, gi)?,
                Edge::Node(m) => accumulate(&mut pending, m.seq, gi)?,
            }
        }
    }
    Ok(grads)
}

fn accumulate(map: &mut HashMap<u64, Tensor>, key: u64, g: Tensor) -> Result<()> {
    let g = g.detach();
    let v = match map.remove(&key) {
        Some(prev) => crate::ops::elementwise::add(&prev, &g)?,
        None => g,
    };
    map.insert(key, v);
    Ok(())
}
