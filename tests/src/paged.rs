//! Paged KV caches for the tests of `lib/paged.tfm` (vLLM-style block tables): a pool of
//! shuffled pages, a table whose entries past a sequence's last page are −1 (never read: the
//! kernel masks keys at or past `Len[b]`), and the f64 reference of one decode step.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::reference::{Nd, dot, softmax_row};
use crate::{Inputs, rand_nd};

/// One decode step's inputs over a paged cache.
pub struct Paged {
    /// Queries `[B, H, E]`.
    pub q: Nd,
    /// Key pages `[NB, PS, G, E]`.
    pub kp: Nd,
    /// Value pages `[NB, PS, G, F]`.
    pub vp: Nd,
    /// Block table `[B, MP]`, row-major; −1 past each sequence's last page.
    pub tbl: Vec<i32>,
    /// Sequence lengths `[B]`.
    pub len: Vec<i32>,
    /// Table width (pages per sequence at most).
    pub mp: usize,
    /// Tokens per page.
    pub ps: usize,
}

/// Sizes of a paged case: `[H, G, E, F, PS, MP]` (H a multiple of G), with one sequence per
/// entry of `lens` (each at most `MP · PS`).
pub fn paged_case(rng: &mut StdRng, [h, g, e, f, ps, mp]: [usize; 6], lens: &[usize], scale: f64) -> Paged {
    let b = lens.len();
    let pages: Vec<usize> = lens.iter().map(|&l| l.div_ceil(ps)).collect();
    assert!(lens.iter().all(|&l| l <= mp * ps), "a sequence longer than its table");
    // Every used page once, in shuffled order, plus two pages no table names.
    let nb = pages.iter().sum::<usize>() + 2;
    let mut pool: Vec<usize> = (0..nb).collect();
    pool.shuffle(rng);
    let mut tbl = vec![-1i32; b * mp];
    let mut next = 0;
    for (s, &n) in pages.iter().enumerate() {
        for j in 0..n {
            tbl[s * mp + j] = pool[next] as i32;
            next += 1;
        }
        // Now and then an unused entry names a real page: masked keys still must not count.
        if n < mp && rng.random_bool(0.5) {
            tbl[s * mp + n] = pool[nb - 1] as i32;
        }
    }
    let scaled = |x: Nd| Nd::new(&x.shape, x.data.iter().map(|v| (v * scale) as f32 as f64).collect());
    Paged {
        q: scaled(rand_nd(rng, &[b, h, e], -1.0, 1.0)),
        kp: scaled(rand_nd(rng, &[nb, ps, g, e], -1.0, 1.0)),
        vp: rand_nd(rng, &[nb, ps, g, f], -1.0, 1.0),
        tbl,
        len: lens.iter().map(|&l| l as i32).collect(),
        mp,
        ps,
    }
}

impl Paged {
    /// The kernel's inputs.
    pub fn inputs(&self) -> Inputs {
        Inputs::new()
            .f32("Q", &self.q)
            .f32("Kp", &self.kp)
            .f32("Vp", &self.vp)
            .i32_shaped("Tbl", &[self.len.len(), self.mp], &self.tbl)
            .i32("Len", &self.len)
    }

    /// `O[b, h, f]`: softmax over sequence b's first `Len[b]` keys (read through the table) of
    /// `q · k / sqrt(E)`, kv head `h / (H / G)`; 0 for an empty sequence.
    pub fn reference(&self) -> Nd {
        let [nbatch, nh, ne] = [self.q.shape[0], self.q.shape[1], self.q.shape[2]];
        let (ng, nf) = (self.kp.shape[2], self.vp.shape[3]);
        let mut out = Nd::zeros(&[nbatch, nh, nf]);
        for b in 0..nbatch {
            let n = self.len[b] as usize;
            let page = |m: usize| self.tbl[b * self.mp + m / self.ps] as usize;
            for h in 0..nh {
                let g = h / (nh / ng);
                let logits: Vec<Option<f64>> = (0..n)
                    .map(|m| Some(dot(ne, |e| self.q.at(&[b, h, e]), |e| self.kp.at(&[page(m), m % self.ps, g, e])) / (ne as f64).sqrt()))
                    .collect();
                let row = softmax_row(&logits, nf, |m, f| self.vp.at(&[page(m), m % self.ps, g, f]));
                for (f, x) in row.into_iter().enumerate() {
                    out.set(&[b, h, f], x);
                }
            }
        }
        out
    }
}
