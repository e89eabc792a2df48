// Numbers and times as a person reads them: times in the viewer's own zone and locale,
// every quantity with its unit.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const withZone = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full",
  timeStyle: "long",
});

function parse(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A `<time>` element for an ISO-8601 instant: the local date and time, and the full
 *  form (with the zone's name) as its tooltip. `short`: the time of day only. */
export function timeElement(iso, { short = false } = {}) {
  const date = parse(iso);
  const element = document.createElement("time");
  if (!date) {
    element.textContent = "—";
    return element;
  }
  element.dateTime = date.toISOString();
  element.textContent = (short ? timeOnly : dateTime).format(date);
  element.title = withZone.format(date);
  return element;
}

/** "3 h 12 min", "4 min 05 s", "12.3 s" between two instants (the second defaults to now). */
export function duration(fromIso, toIso) {
  const from = parse(fromIso);
  if (!from) return "";
  const to = parse(toIso) || new Date();
  return seconds((to - from) / 1000);
}

export function seconds(total) {
  if (!Number.isFinite(total) || total < 0) return "";
  if (total < 60) return `${total.toFixed(total < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(total % 60)).padStart(2, "0")} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

const plain = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const precise = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

/** A number in the viewer's locale; "—" for null (a value that was not finite). */
export function number(value, { digits = null } = {}) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  if (digits !== null) {
    return new Intl.NumberFormat(undefined, { maximumFractionDigits: digits }).format(value);
  }
  return (Math.abs(value) < 1 && value !== 0 ? precise : plain).format(value);
}

/** A 0..1 fraction as a percentage: "83.3 %". */
export function percent(fraction) {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "—";
  return `${number(fraction * 100, { digits: 1 })} %`;
}

/** GiB as the API reports them (`_gb` fields): "8.5 GiB". */
export function gib(value) {
  return value === null || value === undefined ? "—" : `${number(value, { digits: 1 })} GiB`;
}

/** Bytes in binary units: "45.2 MiB". */
export function bytes(count) {
  if (!Number.isFinite(count)) return "—";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${number(value, { digits: unit === 0 ? 0 : 1 })} ${units[unit]}`;
}

export function imagesPerSecond(value) {
  return value === null || value === undefined ? "—" : `${number(value, { digits: 1 })} images/s`;
}

/** A count and its noun: "1 task", "3 tasks". */
export function count(value, noun, plural = `${noun}s`) {
  return `${number(value, { digits: 0 })} ${value === 1 ? noun : plural}`;
}

/** The short form of a task id used in tables: its first 8 characters. */
export function shortId(taskId) {
  return taskId.length > 8 ? `${taskId.slice(0, 8)}…` : taskId;
}
