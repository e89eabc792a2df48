// Building DOM nodes from data. Text always goes in as text nodes, never as HTML, so
// a task's log line or a model's name can never become markup on the page.

/** `h("a", {href: "#/"}, "Overview")`: an element with attributes and children.
 *  Attribute values of `false`, `null` or `undefined` are left out; `true` sets an empty
 *  attribute; `on*` functions become listeners; strings and numbers become text. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The same for SVG elements (charts). */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setAttributes(element, attributes);
  append(element, children);
  return element;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `element` with `children`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A `<dl>` from [term, description] pairs, skipping pairs whose description is empty. */
export function definitions(pairs, attributes = {}) {
  const list = h("dl", attributes);
  for (const [term, description] of pairs) {
    if (description === "" || description === null || description === undefined) continue;
    list.append(h("dt", {}, term), h("dd", {}, description));
  }
  return list;
}
