//! What the store's examples share: running batches on concurrent writers.

use std::future::Future;

use waybill_store::{InboundBatch, Store, StoreError};

/// Deals `batches` to `writers` in turn and runs `work` on each writer's share in a task of its
/// own (spawned, so no transaction is ever held by a future that could be dropped). Returns
/// what each writer's `work` returned.
pub async fn on_writers<T, F, Fut>(
    store: &Store,
    batches: Vec<InboundBatch>,
    writers: usize,
    work: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(Store, Vec<InboundBatch>) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Send + 'static,
{
    let mut queues: Vec<Vec<InboundBatch>> = vec![Vec::new(); writers];
    for (index, batch) in batches.into_iter().enumerate() {
        queues[index % writers].push(batch);
    }
    let tasks: Vec<_> = queues
        .into_iter()
        .map(|queue| tokio::spawn(work(store.clone(), queue)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await??);
    }
    Ok(results)
}
