//! KEDA's `externalscaler.ExternalScaler` gRPC service over the routing
//! table and the fleet's counts.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::metadata::{self, Query};
use crate::poller::CountsReceiver;
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};

/// The service; cheap to clone.
#[derive(Clone, Debug)]
pub struct ScalerService {
    table: Arc<sync::SharedTable>,
    counts: CountsReceiver,
    stream_interval: Duration,
    /// Ends every open stream (shutdown).
    cancel: CancellationToken,
}

impl ScalerService {
    /// A service answering from `table` and `counts`; streams push at least
    /// every `stream_interval` and end when `cancel` fires.
    pub fn new(
        table: Arc<sync::SharedTable>,
        counts: CountsReceiver,
        stream_interval: Duration,
        cancel: CancellationToken,
    ) -> ScalerService {
        ScalerService {
            table,
            counts,
            stream_interval,
            cancel,
        }
    }

    fn values(
        &self,
        query: &Query,
        metric_name: &str,
    ) -> Result<Vec<crate::proto::MetricValue>, Status> {
        let counts = self.counts.borrow().clone();
        Ok(metadata::values(
            &self.table.load(),
            &counts,
            query,
            metric_name,
        )?)
    }

    fn specs(&self, query: &Query) -> Result<GetMetricSpecResponse, Status> {
        Ok(GetMetricSpecResponse {
            metric_specs: metadata::specs(&self.table.load(), query)?,
        })
    }

    fn active(&self, query: &Query) -> Result<bool, Status> {
        Ok(metadata::is_active(&self.values(query, "")?))
    }
}

fn query(r: &ScaledObjectRef) -> Result<Query, Status> {
    Ok(metadata::parse(&r.namespace, &r.name, &r.scaler_metadata)?)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What wakes a stream: its interval, or a change of its input.
enum Wake {
    Interval,
    Change,
    End,
}

impl ScalerService {
    /// Runs a push stream: `eval` at once, then on every change of `changed`
    /// (sent only when the answer differs) and every interval (always
    /// sent), until the client goes, `eval` fails (the error is sent), or
    /// shutdown.
    fn push<T, F, W>(&self, eval: F, mut changed: watch::Receiver<W>) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn() -> Result<T, Status> + Send + 'static,
        W: Send + Sync + 'static,
    {
        changed.mark_unchanged();
        let (tx, rx) = mpsc::channel(4);
        let cancel = self.cancel.clone();
        let period = self.stream_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<T> = None;
            loop {
                let wake = tokio::select! {
                    _ = cancel.cancelled() => Wake::End,
                    _ = tx.closed() => Wake::End,
                    _ = interval.tick() => Wake::Interval,
                    alive = changed.changed() => if alive.is_ok() { Wake::Change } else { Wake::End },
                };
                let force = match wake {
                    Wake::End => return,
                    Wake::Interval => true,
                    Wake::Change => false,
                };
                match eval() {
                    Ok(v) => {
                        if force || last.as_ref() != Some(&v) {
                            last = Some(v.clone());
                            if tx.send(Ok(v)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// A push stream of `eval` for the ScaledObject `r`, woken by
    /// `changed`. `eval` runs once first so that an unknown route fails
    /// the call itself, not the stream.
    fn stream<T, F, W>(
        &self,
        r: &ScaledObjectRef,
        changed: watch::Receiver<W>,
        eval: F,
    ) -> Result<Response<BoxStream<T>>, Status>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&ScalerService, &Query) -> Result<T, Status> + Send + 'static,
        W: Send + Sync + 'static,
    {
        let q = query(r)?;
        eval(self, &q)?;
        let this = self.clone();
        Ok(Response::new(self.push(move || eval(&this, &q), changed)))
    }
}

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let q = query(request.get_ref())?;
        Ok(Response::new(IsActiveResponse {
            result: self.active(&q)?,
        }))
    }

    type StreamIsActiveStream = BoxStream<IsActiveResponse>;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        self.stream(request.get_ref(), self.counts.clone(), |s, q| {
            s.active(q).map(|result| IsActiveResponse { result })
        })
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let q = query(request.get_ref())?;
        Ok(Response::new(self.specs(&q)?))
    }

    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        self.stream(request.get_ref(), self.table.subscribe(), Self::specs)
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request.get_ref();
        let sor = r.scaled_object_ref.as_ref().ok_or_else(|| {
            Status::invalid_argument("GetMetricsRequest.scaledObjectRef is missing")
        })?;
        let q = query(sor)?;
        Ok(Response::new(GetMetricsResponse {
            metric_values: self.values(&q, &r.metric_name)?,
        }))
    }
}
