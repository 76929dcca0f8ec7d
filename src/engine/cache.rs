//! Result cache: blake3(image bytes) + model id + parameters → output.
//! A bounded LRU, by entry count and by bytes.

use std::collections::{BTreeMap, HashMap};

use crate::vision::{InferParams, Output};

pub type Key = [u8; 32];

pub fn key(image_hash: &[u8; 32], model: &str, params: &InferParams) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(image_hash);
    h.update(model.as_bytes());
    h.update(&[0]);
    h.update(&params.key_bytes());
    *h.finalize().as_bytes()
}

pub struct ResultCache {
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    tick: u64,
    map: HashMap<Key, (Output, u64, usize)>,
    order: BTreeMap<u64, Key>,
    pub hits: u64,
    pub misses: u64,
}

impl ResultCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ResultCache {
            max_entries,
            max_bytes,
            bytes: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn get(&mut self, k: &Key) -> Option<Output> {
        self.tick += 1;
        let tick = self.tick;
        match self.map.get_mut(k) {
            Some((out, t, _)) => {
                self.order.remove(t);
                *t = tick;
                self.order.insert(tick, *k);
                self.hits += 1;
                Some(out.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn put(&mut self, k: Key, out: Output) {
        if self.max_entries == 0 {
            return;
        }
        let size = out.approx_bytes();
        if size > self.max_bytes {
            return;
        }
        self.remove(&k);
        self.tick += 1;
        self.bytes += size;
        self.map.insert(k, (out, self.tick, size));
        self.order.insert(self.tick, k);
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.order.iter().next().map(|(t, k)| (*t, *k)) else {
                break;
            };
            self.remove(&oldest);
        }
    }

    fn remove(&mut self, k: &Key) {
        if let Some((_, t, size)) = self.map.remove(k) {
            self.order.remove(&t);
            self.bytes -= size;
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> Output {
        Output {
            tensors: None,
            image_size: [1, 1],
            detections: (0..n)
                .map(|_| crate::vision::Detection {
                    label: "x".into(),
                    class_id: None,
                    score: 1.0,
                    bbox: [0.0; 4],
                    keypoints: vec![],
                })
                .collect(),
            masks: Vec::new(),
            cached: false,
        }
    }

    #[test]
    fn evicts_least_recently_used_by_count_and_bytes() {
        let mut c = ResultCache::new(2, 1 << 20);
        let k = |i: u8| [i; 32];
        c.put(k(1), out(1));
        c.put(k(2), out(1));
        assert!(c.get(&k(1)).is_some());
        c.put(k(3), out(1));
        assert!(c.get(&k(2)).is_none(), "2 was least recently used");
        assert!(c.get(&k(1)).is_some() && c.get(&k(3)).is_some());
        let mut c = ResultCache::new(100, 300);
        c.put(k(1), out(2));
        c.put(k(2), out(2));
        assert!(c.bytes() <= 300);
        assert_eq!(c.len(), 1);
        assert!(c.get(&k(2)).is_some());
    }

    #[test]
    fn key_depends_on_model_and_params() {
        let h = [7u8; 32];
        let p = InferParams::default();
        let q = InferParams {
            conf: Some(0.3),
            iou: None,
            ..Default::default()
        };
        assert_ne!(key(&h, "a", &p), key(&h, "b", &p));
        assert_ne!(key(&h, "a", &p), key(&h, "a", &q));
        assert_eq!(key(&h, "a", &q), key(&h, "a", &q));
    }
}
