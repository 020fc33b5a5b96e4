//! Blocking calls side by side: a slice split over a few scoped threads (store calls block
//! their thread; a database serves independent statements at once). A leaf module.

/// Runs `f` on every element of `items`, the slice cut into at most `threads` chunks run
/// on scoped threads at once (on the calling thread alone for one element).
pub fn for_each_chunked<T: Send>(items: &mut [T], threads: usize, f: impl Fn(&mut T) + Sync) {
    if items.len() <= 1 {
        items.iter_mut().for_each(f);
        return;
    }
    let per_thread = items.len().div_ceil(threads.max(1));
    let f = &f;
    std::thread::scope(|scope| {
        for chunk in items.chunks_mut(per_thread) {
            scope.spawn(move || chunk.iter_mut().for_each(f));
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_element_once_in_place() {
        for n in [0usize, 1, 2, 7, 100] {
            let mut v: Vec<(usize, usize)> = (0..n).map(|i| (i, 0)).collect();
            super::for_each_chunked(&mut v, 4, |(i, out)| *out = *i * 2 + 1);
            assert!(v.iter().all(|(i, out)| *out == i * 2 + 1), "{n}");
        }
    }
}
