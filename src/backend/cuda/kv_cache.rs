//! The paged KV cache: one device allocation of `num_pages` pages, each holding `page_size`
//! positions of K and V for every layer (`[page][layer][k|v][page_size][nkv][d]` bf16), and a
//! page table per sequence. A sequence reserves the pages for its whole length up front, so a
//! request that cannot fit is refused at `alloc_seq` with a clear error instead of failing
//! mid-generation. With the page size a multiple of the block size, a finished block fills
//! whole pages and a step never rewrites a page of the prefix.

use anyhow::{bail, Result};

pub struct PagePool {
    pub page_size: usize,
    pub num_pages: usize,
    free: Vec<u32>,
    /// Per slot: its pages, in position order (None: slot unused).
    tables: Vec<Option<Vec<u32>>>,
}

impl PagePool {
    pub fn new(num_pages: usize, page_size: usize) -> Self {
        // Pop from the end: low page ids first.
        PagePool { page_size, num_pages, free: (0..num_pages as u32).rev().collect(), tables: vec![] }
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    pub fn alloc_seq(&mut self, max_len: usize) -> Result<usize> {
        let need = max_len.div_ceil(self.page_size).max(1);
        if need > self.free.len() {
            bail!(
                "the KV cache cannot hold this request: it needs {need} pages of {} positions ({max_len} positions) but only {} of {} pages are free; lower max_new_tokens or wait for running requests",
                self.page_size,
                self.free.len(),
                self.num_pages
            );
        }
        let pages: Vec<u32> = (0..need).map(|_| self.free.pop().unwrap()).collect();
        if let Some(i) = self.tables.iter().position(|t| t.is_none()) {
            self.tables[i] = Some(pages);
            Ok(i)
        } else {
            self.tables.push(Some(pages));
            Ok(self.tables.len() - 1)
        }
    }

    pub fn free_seq(&mut self, slot: usize) {
        if let Some(t) = self.tables.get_mut(slot).and_then(|t| t.take()) {
            self.free.extend(t.into_iter().rev());
        }
    }

    pub fn table(&self, slot: usize) -> Result<&[u32]> {
        match self.tables.get(slot) {
            Some(Some(t)) => Ok(t),
            _ => bail!("KV slot {slot} is not allocated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pages_are_reserved_and_returned() {
        let mut p = PagePool::new(4, 32);
        let a = p.alloc_seq(64).unwrap();
        assert_eq!(p.table(a).unwrap().len(), 2);
        let b = p.alloc_seq(33).unwrap();
        assert_eq!(p.free_pages(), 0);
        let err = p.alloc_seq(1).unwrap_err().to_string();
        assert!(err.contains("cannot hold"), "{err}");
        p.free_seq(a);
        assert_eq!(p.free_pages(), 2);
        let c = p.alloc_seq(10).unwrap();
        assert_eq!(c, a);
        p.free_seq(b);
        p.free_seq(c);
        assert_eq!(p.free_pages(), 4);
    }
}
