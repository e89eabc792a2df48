// The dashboard's start: ask for a token if the server wants one, then show the page the
// address names (`#/`, `#/tasks`, `#/task/<id>`, `#/compare`, `#/limits`, `#/models`).
// Until the server has accepted the viewer, nothing but the prompt is shown.

import { ApiError, get, onUnauthorized } from "./api.js";
import { clearToken, currentToken, setToken } from "./token.js";
import * as compare from "./views/compare.js";
import * as limits from "./views/limits.js";
import * as models from "./views/models.js";
import * as overview from "./views/overview.js";
import * as task from "./views/task.js";
import * as tasks from "./views/tasks.js";
import { fill, h } from "./dom.js";

const ROUTES = [
  [/^\/?$/, overview, "overview"],
  [/^\/tasks$/, tasks, "tasks"],
  [/^\/task\/([^/]+)$/, task, "tasks"],
  [/^\/compare$/, compare, "compare"],
  [/^\/limits$/, limits, "limits"],
  [/^\/models(?:\/([^/]+))?$/, models, "models"],
];

const app = document.getElementById("app");
const main = document.getElementById("main");
const gate = document.getElementById("auth");
const gateForm = document.getElementById("auth-form");
const gateMessage = document.getElementById("auth-message");
const boot = document.getElementById("boot");
let leave = () => {};
let shown = false;

function route() {
  leave();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  for (const [pattern, view, section] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.section === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    let argument;
    try {
      argument = match[1] === undefined ? undefined : decodeURIComponent(match[1]);
    } catch {
      break; // a malformed address (`#/task/%E0`): no such page
    }
    leave = view.render(main, params, argument) || (() => {});
    document.title = `Tandem · ${main.querySelector("h1")?.textContent || section}`;
    return;
  }
  leave = () => {};
  fill(main, h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/" }, "Go to the overview")));
}

function showApp() {
  boot.hidden = true;
  gate.hidden = true;
  app.hidden = false;
  document.getElementById("forget").hidden = !currentToken();
  if (!shown) {
    shown = true;
    window.addEventListener("hashchange", () => {
      route();
      main.querySelector("h1")?.setAttribute("tabindex", "-1");
      main.querySelector("h1")?.focus();
    });
  }
  route();
  hideModelsWithoutRegistry();
}

function showPrompt(message = "") {
  leave();
  leave = () => {};
  fill(main); // nothing of the server's may stay on the page
  boot.hidden = true;
  app.hidden = true;
  gate.hidden = false;
  gateMessage.hidden = !message;
  gateMessage.textContent = message;
  document.getElementById("token").focus();
}

/** Whether the server accepts this viewer (with the token given, if any). */
async function accepted() {
  try {
    await get("/api/v2/resources");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false;
    throw error;
  }
}

/** The registry's page is offered only where the server has the registry. */
async function hideModelsWithoutRegistry() {
  const link = document.querySelector('#nav a[data-section="models"]');
  try {
    await get("/api/v2/models");
    link.parentElement.hidden = false;
  } catch (error) {
    link.parentElement.hidden = error instanceof ApiError && error.status === 404;
  }
}

gateForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  setToken(input.value.trim());
  try {
    if (await accepted()) {
      input.value = "";
      showApp();
    } else {
      clearToken();
      showPrompt("The server refused that token.");
    }
  } catch (error) {
    showPrompt(`Cannot check the token: ${error.detail || error.message}`);
  }
});

document.getElementById("forget").addEventListener("click", () => {
  clearToken();
  showPrompt();
});

document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

onUnauthorized(() => {
  clearToken();
  showPrompt("The server no longer accepts the token; give it again.");
});

async function start() {
  for (;;) {
    try {
      if (await accepted()) showApp();
      else showPrompt();
      return;
    } catch (error) {
      boot.textContent = `Cannot reach the Tandem server (${error.detail || error.message}); trying again…`;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

start();
