// How the pages write numbers, and the model card's fields in words: /api/model sends the model file's
// metadata as is (mean/std per channel, the last epoch's history.csv row); this module says what
// they mean for a person. Pure functions, no DOM, so the browser test can call them directly.

/** A probability or accuracy in 0..1 as a percentage with one decimal: 0.4156 -> "41.6%". */
export const percent = (p) => `${(100 * p).toFixed(1)}%`;

/** An integer with thousands separators: 62006 -> "62,006". */
export const count = (n) => Math.round(n).toLocaleString("en");

/** A number with `digits` significant digits and no trailing zeros: 0.0010000000474974513 -> "0.001". */
export const significant = (v, digits = 3) => String(Number(v.toPrecision(digits)));

/** Seconds as a person reads them: 0.529 -> "0.53 s", 92.4 -> "1 min 32 s". */
export function duration(s) {
  if (s < 60) return `${significant(s, 2)} s`;
  const minutes = Math.floor(s / 60);
  return `${minutes} min ${Math.round(s - 60 * minutes)} s`;
}

/**
 * The input normalization in words. The model computes (pixels / 255 - mean) / std per channel, so mean 0
 * and std 1 on every channel is plain scaling ("pixels scaled to 0..1"); anything else is listed per
 * channel with 3 decimals.
 */
export function normalization(mean, std) {
  if (mean.every((m) => m === 0) && std.every((s) => s === 1)) return "pixels scaled to 0..1";
  const list = (values) => values.map((v) => v.toFixed(3)).join(", ");
  return `pixels scaled to 0..1, then per channel minus mean ${list(mean)} and divided by std ${list(std)}`;
}

// The keys of a run's metrics and history.csv rows (engine.run_folder.HISTORY_FIELDS, and val_acc_tta
// from the training loop): the label a person reads, and how its value is written.
const loss = (v) => v.toFixed(3);
const FIELDS = {
  epoch: ["Epochs trained", count],
  train_loss: ["Training loss", loss],
  train_acc: ["Training accuracy", percent],
  val_loss: ["Validation loss", loss],
  val_acc: ["Validation accuracy", percent],
  val_acc_tta: ["Validation accuracy with test-time augmentation", percent],
  lr: ["Learning rate at the last step", significant],
  seconds: ["Time of the last epoch", duration],
  images_per_s: ["Training speed", (v) => `${count(v)} images per second`],
};

/** A metric's label: "val_acc" -> "Validation accuracy"; a key this page does not know -> "Some key". */
export function metricLabel(key) {
  if (FIELDS[key]) return FIELDS[key][0];
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A history.csv column's header: as metricLabel, except that a row is one epoch, numbered. */
export const historyLabel = (key) => (key === "epoch" ? "Epoch" : metricLabel(key));

/** A metric's value in words: ("images_per_s", 3400.6) -> "3,401 images per second"; a missing one -> "–". */
export function metricValue(key, v) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v !== "number") return typeof v === "object" ? JSON.stringify(v) : String(v);
  if (FIELDS[key]) return FIELDS[key][1](v);
  if (/(^|_)acc(_|$)/.test(key) && v >= 0 && v <= 1) return percent(v); // e.g. a test_acc a later version may add
  return Number.isInteger(v) ? count(v) : significant(v, 4);
}

/** The metrics object as [label, value] rows, in the order the training loop wrote them. */
export const metricRows = (metrics) => Object.entries(metrics).map(([k, v]) => [metricLabel(k), metricValue(k, v)]);
