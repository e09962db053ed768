//! What differs between models, as the training loop sees it: [`Task`]
//! (data, loss, evaluation) and [`Report`] (what a run writes about it).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::experiment::Experiment;
use crate::error::{Error, Result};
use crate::eval::report::Row;
use crate::util::rng::Rng;

use super::evaluate::EvalResult;
use super::parts::BundleParts;

/// The random stream of a model's initial weights (distinct from the
/// loop's data-order and step streams).
pub(crate) const INIT: u64 = 0x696e_6974;

/// One model's side of learning: its data, loss and evaluation.
pub trait Task {
    type Model: Module;
    /// What one training unit is, plural ("sequences", "samples").
    const UNIT: &'static str;
    /// Training units per epoch; an epoch visits each once, in shuffled order.
    fn n_units(&self) -> usize;
    /// The model as configured, initialised from the run's seed.
    fn build(&self, device: &Device) -> Self::Model;
    /// The loss `[1]` of the units `batch`, on the autodiff device; every
    /// random choice comes from `rng`.
    fn loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> Tensor<1>;
    /// What `loss` of these units averages over (its denominator): a
    /// batch split over devices weighs each part's loss by its share of the
    /// whole, so the parts sum to the whole batch's mean. Default: one per
    /// unit.
    fn weight(&self, batch: &[usize]) -> f64 {
        batch.len() as f64
    }
    /// Metrics on the validation period (the model is in inference mode).
    fn validate(&self, model: &Self::Model, device: &Device) -> EvalResult;
    /// Metrics on the test period.
    fn test(&self, model: &Self::Model, device: &Device) -> EvalResult;
}

/// One model's side of what a run reports: the start line, `run.json`, and
/// the results table's rows, protocol and notes.
pub trait Report: Task {
    /// One line about the data and model, printed at the start.
    fn describe(&self, model: &Self::Model) -> String;
    /// Written to `run.json` at the start of a run.
    fn run_info(&self) -> serde_json::Value;
    /// The model's test rows and the baselines' on the same customers.
    fn result_rows(&self, test: &EvalResult) -> Vec<Row>;
    /// How the test was set up, for the results table.
    fn protocol(&self, test: &EvalResult) -> String;
    /// Markdown after the tables (e.g. extra metrics), and its JSON form.
    fn result_notes(&self, _test: &EvalResult) -> (String, serde_json::Value) {
        (String::new(), serde_json::Value::Null)
    }
    fn dataset_name(&self) -> &str;
    fn has_price(&self) -> bool;
    /// What a bundle of this model needs from the data, recorded when the
    /// run starts so export never reads the data again.
    fn bundle_parts(&self) -> BundleParts;
    /// The run's dataset (item ids and features, for the projector).
    fn data(&self) -> &crate::data::Dataset;
    /// The vectors the model scores items with `[n_items, d]` (row 0 =
    /// padding), for TensorBoard's embedding projector.
    fn item_vectors(&self, model: &Self::Model, device: &Device) -> Tensor<2>;
}

/// The experiment's prepared data and its split, which must have a
/// validation part (model selection reads it).
pub(crate) fn load_split(
    exp: &Experiment,
) -> Result<(crate::data::Dataset, crate::data::split::Split)> {
    let mut ds = crate::data::cache::read(&exp.data.cache)?;
    if exp.data.holdout_days > 0 {
        let end = crate::data::split::last_day(&ds)
            .ok_or_else(|| Error::Data(format!("`{}` has no purchases", ds.meta.name)))?;
        ds = crate::data::split::before(&ds, end + 1 - i64::from(exp.data.holdout_days));
    }
    let mut split = crate::data::split::split(&ds, exp.data.split, exp.data.target_days)?;
    if exp.data.refit {
        split.train = crate::data::split::time_order(&ds);
    }
    if split.valid.is_empty() {
        return Err(Error::Data(format!(
            "the {:?} split of `{}` has no validation rows; model selection needs them",
            exp.data.split, ds.meta.name
        )));
    }
    Ok((ds, split))
}
