//! The plan a request runs on: one [`Generation`] (plan, shared state, router) held in an
//! `ArcSwap`, pinned into each request's extensions when it arrives. A reload swaps the
//! whole generation at once: a request that started keeps its own to the end, the next one
//! sees the new one, and no request ever mixes the two.

use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpMessage;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{Error, HttpRequest};
use arc_swap::ArcSwap;
use futures_util::FutureExt;

use super::router::Router;
use crate::actions::AppState;

/// One loaded plan and everything built from it.
pub struct Generation {
    /// Counts up from 1 with each successful reload.
    pub number: u64,
    /// The plan and the state built from it (some parts carried over from the last one).
    pub state: Arc<AppState>,
    /// The plan's routes, compiled.
    pub router: Router,
}

impl Generation {
    /// A generation of `state`, its router compiled from its plan.
    pub fn new(number: u64, state: Arc<AppState>) -> Self {
        let router = Router::new(&state.plan.routes, &state.metrics);
        Self {
            number,
            state,
            router,
        }
    }
}

/// The current generation, shared by every worker and listener.
pub struct Live {
    current: ArcSwap<Generation>,
    next_number: AtomicU64,
}

impl Live {
    /// Starts with generation 1 of `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Generation::new(1, state)),
            next_number: AtomicU64::new(2),
        }
    }

    /// The generation new requests get.
    pub fn load(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Puts `state` in service for every request that arrives from now on.
    pub fn swap(&self, state: Arc<AppState>) -> u64 {
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        self.current.store(Arc::new(Generation::new(number, state)));
        number
    }
}

/// The generation a request was pinned to by the envelope.
#[derive(Clone)]
struct Pinned(Arc<Generation>);

/// Pins the current generation into the request (done once, by the outermost layer).
pub fn pin(req: &ServiceRequest) -> Option<Arc<Generation>> {
    let live = req.app_data::<actix_web::web::Data<Live>>()?;
    let generation = live.load();
    req.extensions_mut().insert(Pinned(generation.clone()));
    Some(generation)
}

/// The generation the request was pinned to.
pub fn of(req: &HttpRequest) -> Option<Arc<Generation>> {
    req.extensions().get::<Pinned>().map(|p| p.0.clone())
}

/// The route template a request matched (`/api/notes/{id}`), for logs and metrics labels:
/// never the raw path.
#[derive(Clone)]
pub struct RouteTemplate(pub Arc<str>);

/// The template of the route the request matched, if any.
pub fn route_template(req: &HttpRequest) -> Option<Arc<str>> {
    req.extensions().get::<RouteTemplate>().map(|t| t.0.clone())
}

/// CORS of the request's generation: actix-cors, built per worker for each generation
/// (it is stateless) and kept until the next one.
pub struct LiveCors;

impl<S> Transform<S, ServiceRequest> for LiveCors
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error> + 'static,
{
    type Response = ServiceResponse;
    type Error = Error;
    type Transform = LiveCorsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(LiveCorsService {
            inner: Rc::new(service),
            built: RefCell::new(None),
        }))
    }
}

type CorsService<S> = <actix_cors::Cors as Transform<Shared<S>, ServiceRequest>>::Transform;

/// See [`LiveCors`].
pub struct LiveCorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error> + 'static,
{
    inner: Rc<S>,
    /// The CORS service of the last generation seen by this worker.
    built: RefCell<Option<(u64, Rc<CorsService<S>>)>>,
}

/// The inner service, shared by the CORS services of successive generations.
pub struct Shared<S>(Rc<S>);

impl<S> Service<ServiceRequest> for Shared<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error>,
{
    type Response = ServiceResponse;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.0.call(req)
    }
}

impl<S> Service<ServiceRequest> for LiveCorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = Error> + 'static,
{
    type Response = ServiceResponse;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ServiceResponse, Error>>>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let generation = of(req.request());
        let cors = generation.as_ref().and_then(|g| {
            let plan = g.state.plan.cors.as_ref()?;
            let mut built = self.built.borrow_mut();
            if let Some((n, svc)) = built.as_ref()
                && *n == g.number
            {
                return Some(svc.clone());
            }
            let svc = crate::cors::build(plan)
                .new_transform(Shared(self.inner.clone()))
                .now_or_never()?
                .ok()?;
            let svc = Rc::new(svc);
            *built = Some((g.number, svc.clone()));
            Some(svc)
        });
        match cors {
            Some(svc) => Box::pin(async move {
                let res = svc.call(req).await?;
                Ok(res.map_into_boxed_body())
            }),
            None => {
                let inner = self.inner.clone();
                Box::pin(async move { inner.call(req).await })
            }
        }
    }
}
