//! Control-flow graph of a lowered function and immediate post-dominators (Cooper–Harvey–Kennedy on
//! the reverse CFG with a virtual exit). Every conditional branch gets its reconvergence point: the
//! first instruction of the immediate post-dominator of its block (or none when that is the exit).

use crate::ir::NONE;

/// How an instruction affects control flow.
pub(crate) enum Flow {
    /// Falls through.
    Next,
    /// Branches to a target (and falls through if guarded).
    Branch(u32),
    /// Leaves the function (ret/exit/trap); falls through if guarded.
    Leave,
}

/// An instruction as the CFG sees it (implemented by `ops::Inst`).
pub(crate) trait Branching {
    /// Its control-flow effect.
    fn flow(&self) -> Flow;
    /// Whether it runs only under a predicate (a guarded branch may fall through).
    fn is_guarded(&self) -> bool;
    /// Records the reconvergence pc of a branch.
    fn set_reconvergence(&mut self, rpc: u32);
}

/// Computes and stores the reconvergence pc of every branch in `code`.
pub(crate) fn set_reconvergence<I: Branching>(code: &mut [I]) {
    let n = code.len();
    if n == 0 {
        return;
    }
    // Basic blocks.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    for (pc, inst) in code.iter().enumerate() {
        match inst.flow() {
            Flow::Branch(t) => {
                if (t as usize) < n {
                    leader[t as usize] = true;
                }
                leader[pc + 1] = true;
            }
            Flow::Leave => leader[pc + 1] = true,
            Flow::Next => {}
        }
    }
    let mut block_of = vec![0usize; n];
    let mut starts = Vec::new();
    for pc in 0..n {
        if leader[pc] {
            starts.push(pc);
        }
        block_of[pc] = starts.len() - 1;
    }
    let nb = starts.len();
    let exit = nb; // virtual exit node
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); nb + 1];
    let mut pred: Vec<Vec<usize>> = vec![Vec::new(); nb + 1];
    for b in 0..nb {
        let end = starts.get(b + 1).copied().unwrap_or(n) - 1;
        let last = &code[end];
        let guarded = last.is_guarded();
        let mut s = Vec::new();
        let fall = if end + 1 < n { block_of[end + 1] } else { exit };
        match last.flow() {
            Flow::Branch(t) => {
                s.push(if (t as usize) < n {
                    block_of[t as usize]
                } else {
                    exit
                });
                if guarded {
                    s.push(fall);
                }
            }
            Flow::Leave => {
                s.push(exit);
                if guarded {
                    s.push(fall);
                }
            }
            Flow::Next => s.push(fall),
        }
        s.dedup();
        for &t in &s {
            pred[t].push(b);
        }
        succ[b] = s;
    }
    // Post-order of the reverse graph from the exit (iterative DFS over predecessors).
    let mut po = vec![usize::MAX; nb + 1];
    let mut order = Vec::with_capacity(nb + 1);
    let mut visited = vec![false; nb + 1];
    let mut stack: Vec<(usize, usize)> = vec![(exit, 0)];
    visited[exit] = true;
    while let Some((node, i)) = stack.pop() {
        if let Some(&p) = pred[node].get(i) {
            stack.push((node, i + 1));
            if !visited[p] {
                visited[p] = true;
                stack.push((p, 0));
            }
        } else {
            po[node] = order.len();
            order.push(node);
        }
    }
    let mut ipdom = vec![usize::MAX; nb + 1];
    ipdom[exit] = exit;
    let mut changed = true;
    while changed {
        changed = false;
        for &b in order.iter().rev() {
            if b == exit {
                continue;
            }
            let mut new = usize::MAX;
            for &s in &succ[b] {
                if ipdom[s] == usize::MAX {
                    continue;
                }
                new = if new == usize::MAX {
                    s
                } else {
                    intersect(&ipdom, &po, s, new)
                };
            }
            if new != usize::MAX && ipdom[b] != new {
                ipdom[b] = new;
                changed = true;
            }
        }
    }
    for pc in 0..n {
        if let Flow::Branch(_) = code[pc].flow() {
            let b = block_of[pc];
            let r = ipdom[b];
            let rpc = if r == usize::MAX || r == exit {
                NONE
            } else {
                starts[r] as u32
            };
            code[pc].set_reconvergence(rpc);
        }
    }
}

fn intersect(ipdom: &[usize], po: &[usize], mut a: usize, mut b: usize) -> usize {
    while a != b {
        while po[a] < po[b] {
            a = ipdom[a];
        }
        while po[b] < po[a] {
            b = ipdom[b];
        }
    }
    a
}
