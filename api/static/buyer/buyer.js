// The reference buyer page: one event's waiting room, purchase, order and waitlist, written
// to docs/frontend.md with nothing but the browser (no framework, no build step).
// Read it top to bottom:
//   1. settings and saved state     2. talking to the API (every retry lives there)
//   3. showing things               4. the steps: one per stage, each returns the next
//   5. the start
"use strict";

// ------------------------------------------------------------ 1. settings and saved state

const EVENT_ID = Number(new URLSearchParams(location.search).get("event")) || null;
// The page is served by the API itself. A page on another origin puts the API's URL here,
// and the operators list that origin in CORS_ALLOWED_ORIGINS.
const API = "";
// The room's public state is the same for everyone and the front door caches it for a
// second, so looking every ~2 s costs the API about one answer a second for the whole
// crowd. The own state (me/) is asked at its Retry-After, or when the public state says
// the turn has come.
const PUBLIC_LOOK_SECONDS = 2;
const BACKOFF_CAP_SECONDS = 30; // network errors: 1, 2, 4 … 30 s, jittered
const ANNOUNCE_EVERY_SECONDS = 15; // the place in line is read out at most this often
const ENTRY_STEP = { waiting: "wait", admitted: "buy", expired: "expired", sold_out: "soldOut" };

// Tokens live as long as the tab (a reload keeps them, closing the tab forgets them).
// What this buyer did on this event lives in localStorage, so a reload, or another tab
// after logging in again, finds the same purchase: {purchase: {key, quantity}, orderId}.
let tokens = JSON.parse(sessionStorage.getItem("buyer:tokens") || "null");
let saved = {};
let event = null; // the event, as GET /events/<id>/ answered it
let entry = null; // this buyer's place in the waiting room (join/ or me/)
let spot = null; // this buyer's place on the waitlist (waitlist/me/)

function keepTokens(pair) {
  tokens = pair && { ...tokens, ...pair };
  if (tokens) sessionStorage.setItem("buyer:tokens", JSON.stringify(tokens));
  else sessionStorage.removeItem("buyer:tokens");
}

function save(changes) {
  Object.assign(saved, changes);
  localStorage.setItem(`buyer:${EVENT_ID}:${tokens.username}`, JSON.stringify(saved));
}

function loadSaved() {
  saved = JSON.parse(localStorage.getItem(`buyer:${EVENT_ID}:${tokens.username}`) || "{}");
}

// One key per purchase the buyer means to make, sent again with every retry of it.
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));
// Never exactly Retry-After: a crowd told "2" at once would all come back at once.
const jitter = (seconds) => seconds * (1 + Math.random() / 2);
const never = new Promise(() => {});
const roomPath = () => `/events/${EVENT_ID}/waiting-room/`;
const waitlistPath = () => `/events/${EVENT_ID}/waitlist/`;

// admitted_until and opens_at are the server's times: the page corrects them by the
// difference between the server's clock (each answer's Date header) and its own.
let skew = 0;
const localTime = (iso) => Date.parse(iso) - skew;

// -------------------------------------------------------------- 2. talking to the API

class LoggedOut extends Error {}

// Send one request and answer {status, data, retryAfter}. Whatever the contract says to
// resend unchanged is resent here, so no step has to: a 503 (the door is busy, a part is
// down) and a 429 (throttled) after Retry-After, a network error after a growing pause,
// all jittered. A purchase goes again with the same Idempotency-Key, so nothing is bought
// twice. An expired access token is refreshed once; when that fails, LoggedOut goes up to
// the main loop, which asks to log in again.
async function call(method, path, { body, key, auth = true } = {}) {
  let renewed = false;
  for (let failures = 0; ; ) {
    const headers = body ? { "Content-Type": "application/json" } : {};
    if (auth) headers.Authorization = `Bearer ${tokens?.access}`;
    if (key) headers["Idempotency-Key"] = key;
    let response;
    try {
      response = await fetch(API + path, { method, headers, body: body && JSON.stringify(body) });
    } catch {
      const pause = jitter(Math.min(2 ** failures++, BACKOFF_CAP_SECONDS));
      record(method, path, "network error", "", pause);
      notice(`No connection. Trying again in ${Math.ceil(pause)} s.`);
      await sleep(pause);
      continue;
    }
    const data = await response.json().catch(() => ({}));
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    const date = response.headers.get("Date");
    if (auth && date) skew = Date.parse(date) - Date.now();
    // A login's 429 is for the person typing (too many attempts): the login step says when.
    const resend = response.status === 503 || (response.status === 429 && path !== "/login/");
    const pause = resend ? jitter(retryAfter || 2) : null;
    record(method, path, response.status, data.code, pause);
    if (resend) {
      notice(`${data.message || "The service is busy."} Trying again in ${Math.ceil(pause)} s.`);
      await sleep(pause);
      continue;
    }
    notice("");
    if (response.status === 401 && auth) {
      if (data.code === "token_not_valid" && !renewed) {
        renewed = true;
        if (await refreshed()) continue;
      }
      throw new LoggedOut(data.message);
    }
    return { status: response.status, data, retryAfter };
  }
}

// Trade the refresh token for a new pair (the old one is blacklisted at once, so keep the
// new one). The steps run one at a time, so two refreshes never race.
async function refreshed() {
  if (!tokens?.refresh) return false;
  const body = { refresh: tokens.refresh };
  const { status, data } = await call("POST", "/token/refresh/", { body, auth: false });
  keepTokens(status === 200 ? data : null);
  return status === 200;
}

// ------------------------------------------------------------------ 3. showing things

const $ = (id) => document.getElementById(id);

// Show one stage (a <section>), and put the keyboard focus on its first action.
function show(stage) {
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== stage;
  }
  document.body.dataset.stage = stage;
  $(stage).querySelector("[data-focus]")?.focus();
}

// Two aria-live regions: the status line, read out at once, for a change of state; the
// announcer (for screen readers only) for the place in line, at most every
// ANNOUNCE_EVERY_SECONDS: read out at every look, it would never stop talking.
function say(text) {
  if ($("status").textContent !== text) $("status").textContent = text;
}
let announcedAt = 0;
function announce(text) {
  if (Date.now() - announcedAt < ANNOUNCE_EVERY_SECONDS * 1000) return;
  announcedAt = Date.now();
  $("announcer").textContent = text;
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

// A final state: nothing more to do here.
function end(title, text, tone = "") {
  show("final");
  $("final-title").textContent = title;
  $("final-title").className = tone;
  $("final-text").textContent = text;
  say(`${title}. ${text}`);
  return null;
}

function about(seconds) {
  if (seconds === null || Number.isNaN(seconds)) return "–";
  if (seconds < 90) return `about ${Math.max(1, Math.round(seconds))} s`;
  return `about ${Math.round(seconds / 60)} min`;
}

// Every element given a deadline (local ms) shows the time left, each second.
function countDown(element, deadline) {
  element.dataset.until = deadline;
  tick();
}
function tick() {
  for (const element of document.querySelectorAll("[data-until]")) {
    const left = Math.max(0, Math.round((element.dataset.until - Date.now()) / 1000));
    element.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  }
}
setInterval(tick, 1000);

// The requests this page sent, newest first: for people reading along (and the tests).
function record(method, path, status, code, pause) {
  const item = document.createElement("li");
  Object.assign(item.dataset, { at: Date.now(), method, path, status, code: code || "" });
  const again = pause ? `, again in ${pause.toFixed(1)} s` : "";
  const time = new Date().toLocaleTimeString();
  item.textContent = `${time} ${method} ${path} → ${status} ${code || ""}${again}`;
  $("activity-log").prepend(item);
  $("activity-log").children[60]?.remove();
}

// Resolve with a form's fields at its next submit (the button, or Enter in a field).
// One listener for every form: a form nobody waits for does nothing.
const awaited = new Map();
document.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const resolve = awaited.get(submit.target);
  awaited.delete(submit.target);
  resolve?.(Object.fromEntries(new FormData(submit.target)));
});
const submitted = (form) => new Promise((resolve) => awaited.set(form, resolve));

function showEvent() {
  $("event-name").textContent = document.title = event.name;
  const when = new Date(event.date).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  $("event-details").textContent = [when, event.venue].filter(Boolean).join(" · ");
  const most = event.max_tickets_per_user || 10; // PURCHASE_MAX_QUANTITY by default
  for (const id of ["quantity", "waitlist-quantity"]) $(id).max = most;
  $("account-name").textContent = tokens.username;
  $("account").hidden = false;
}

// While waiting: the number, the places to go, the estimated wait and the progress bar,
// from the public state (serving) and this buyer's entry (number).
function showPlace(room) {
  const opensAt = room.opens_at ? localTime(room.opens_at) : 0;
  const opensIn = Math.max(opensAt - Date.now(), 0) / 1000;
  if (entry.number === null) {
    // An early joiner: the places of all who joined before the opening are drawn then.
    countDown($("wait"), opensAt);
    $("progress").removeAttribute("value");
    const who = `the ${room.joined} buyers who joined before the opening`;
    $("waiting-note").textContent = `The places of ${who} are drawn at random when it opens.`;
    announce(`You are in line. Places are drawn at random at the opening, in ${about(opensIn)}.`);
    return;
  }
  delete $("wait").dataset.until;
  const position = Math.max(entry.number - room.serving, 0);
  const pace = room.rate
    ? position / room.rate
    : (entry.estimated_wait_seconds ?? NaN) - (Date.now() - entry.readAt) / 1000;
  const wait = about(opensIn + Math.max(pace, 0));
  $("number").textContent = entry.number;
  $("position").textContent = position;
  $("wait").textContent = wait;
  $("progress").max = entry.number;
  $("progress").value = Math.min(room.serving, entry.number);
  $("waiting-note").textContent = room.paused ? "The line is paused for a moment." : "";
  announce(`Your number is ${entry.number}: ${position} places to go, ${wait}.`);
}

// A refused purchase: the server's message for people; the fields' limits follow its detail.
function showRefusal(data) {
  const most = data.tickets_available ?? data.tickets_allowed ?? data.tickets_offered;
  for (const field of most ? [$("quantity"), $("offer-quantity")] : []) {
    field.max = most;
    field.value = Math.min(Number(field.value), most);
  }
  const fields = data.errors ? ` ${Object.values(data.errors).flat().join(" ")}` : "";
  $("buy-error").textContent = $("offer-error").textContent = data.message + fields;
  say(data.message);
}

// A pending order: its place in the event's line and the estimated wait.
function showPending(order) {
  say(`Order ${order.id} is in: waiting for its confirmation.`);
  const ahead = order.position === null ? "" : ` ${order.position} orders ahead of yours,`;
  const text = `Pending:${ahead} ${about(order.estimated_wait_seconds)}.`;
  $("order-state").textContent = text;
  announce(text);
}

// ------------------------------------------------------------------------ 4. the steps

// Where a refused purchase (409, 400, 422) sends the buyer; the code decides, never the
// message (docs/frontend.md, "Errors").
const REFUSED = {
  sold_out: "soldOut",
  sold_out_waitlist_open: "soldOut",
  insufficient_tickets: "buy", // fewer left: the field's max becomes tickets_available
  limit_exceeded: "buy", // tickets_allowed
  sale_not_open: "buy",
  invalid: "buy",
  idempotency_key_reused: "buy",
  offer_quantity_exceeded: "waitlist", // tickets_offered: back to the offer
  not_admitted_yet: "room", // too early: back to the line (joining again keeps the place)
  admission_expired: "expired",
  not_in_waiting_room: "room", // join first
};

const steps = {
  // POST /login/, then start over from the event: what was saved and what the server
  // keeps (the place in line, the order, the waitlist) bring the buyer back to the same
  // stage, as a reload does.
  async login() {
    show("login");
    for (;;) {
      const fields = await submitted($("login-form"));
      const answer = await call("POST", "/login/", { body: fields, auth: false });
      if (answer.status === 200) {
        keepTokens({ ...answer.data, username: fields.username });
        $("login-error").textContent = $("password").value = "";
        return "event";
      }
      // 401: wrong username or password; 429: too many attempts, try again later.
      const later = answer.retryAfter ? ` Try again in ${answer.retryAfter} s.` : "";
      $("login-error").textContent = answer.data.message + later;
    }
  },

  // Read the event, then pick up where this buyer left it: an order to follow, a
  // purchase sent before a reload (sent again with its key), the waitlist, or the line.
  async event() {
    const { status, data } = await call("GET", `/events/${EVENT_ID}/`);
    if (status !== 200) return end("No such event", data.message);
    event = data;
    showEvent();
    loadSaved();
    if (saved.orderId) return "order";
    if (saved.purchase) return "purchase";
    return "room";
  },

  // Join the waiting room; joining again (a reload) keeps the place. No room: buy as usual.
  async room() {
    const { status, data, retryAfter } = await call("POST", `${roomPath()}join/`);
    if (data.code === "waiting_room_closed") return event.tickets_available ? "buy" : "soldOut";
    if (status !== 200 && status !== 201) return end("You cannot join this line", data.message);
    entry = { ...data, readAt: Date.now(), lookAt: Date.now() + jitter(retryAfter || 1) * 1000 };
    return ENTRY_STEP[entry.state];
  },

  // Wait for the turn: the public state (no token, cached at the door) every ~2 s for the
  // progress; the own state at its Retry-After, at the opening, or when serving reaches
  // the number.
  async wait() {
    show("waiting");
    say("You are in line.");
    announcedAt = 0;
    for (;;) {
      const { status, data: room } = await call("GET", roomPath(), { auth: false });
      if (status === 404) return "buy"; // the room was turned off: buy as usual
      if (room.sold_out) return "soldOut";
      const opened = !room.opens_at || localTime(room.opens_at) <= Date.now();
      const turn = entry.number === null ? opened : room.serving >= entry.number;
      if (turn || Date.now() >= entry.lookAt) {
        const own = await call("GET", `${roomPath()}me/`);
        if (own.status === 404) return "room"; // not_in_waiting_room: join again
        const lookAt = Date.now() + jitter(own.retryAfter || 1) * 1000;
        entry = { ...own.data, readAt: Date.now(), lookAt };
        if (entry.state !== "waiting") return ENTRY_STEP[entry.state];
      }
      showPlace(room);
      await sleep(jitter(PUBLIC_LOOK_SECONDS));
    }
  },

  // The turn has come (or the event has no room): choose how many and buy, before the
  // admission ends. Pressing Buy makes a new Idempotency-Key, saved before it is sent.
  async buy() {
    show("buy");
    const deadline = entry?.admitted_until ? localTime(entry.admitted_until) : null;
    $("buy-deadline").hidden = !deadline;
    if (deadline) countDown($("buy-countdown"), deadline);
    say(deadline ? "It's your turn: buy before the time runs out." : "Tickets are on sale.");
    // At least a second: clocks a second apart must not turn this into a loop.
    const timeUp = deadline ? sleep(Math.max((deadline - Date.now()) / 1000, 1)) : never;
    const fields = await Promise.race([submitted($("buy-form")), timeUp]);
    if (!fields) return "room"; // the admission ran out: the room says expired
    $("buy-error").textContent = "";
    save({ purchase: { key: newKey(), quantity: Number(fields.quantity) } });
    return "purchase";
  },

  // POST the purchase with its key. The same key goes again after a reload, a 503, a 429,
  // a network error (all in call) or 409 request_in_progress: one order whatever happens.
  async purchase() {
    show("order");
    $("order-state").textContent = "Sending your purchase…";
    const { key, quantity } = saved.purchase;
    const path = `/events/${EVENT_ID}/purchase/`;
    const { status, data, retryAfter } = await call("POST", path, { body: { quantity }, key });
    if (status === 202) {
      save({ purchase: null, orderId: data.id });
      showPending(data);
      await sleep(jitter(retryAfter || 1));
      return "order";
    }
    if (data.code === "request_in_progress") {
      await sleep(jitter(retryAfter || 1));
      return "purchase";
    }
    save({ purchase: null }); // refused: nothing was bought; another try is a new purchase
    const next = REFUSED[data.code];
    if (!next) return end("The purchase did not go through", data.message);
    showRefusal(data);
    return next;
  },

  // Follow the order (GET /orders/<id>/) at its Retry-After until it is final.
  async order() {
    show("order");
    for (;;) {
      const { status, data, retryAfter } = await call("GET", `/orders/${saved.orderId}/`);
      if (status === 404 || data.status === "rejected") {
        save({ orderId: null });
        $("buy-error").textContent = data.reason || data.message;
        return "room"; // not confirmed: back to the line or the sale, which know what is left
      }
      if (data.status === "confirmed") {
        const text = `${data.quantity} ticket(s) are yours: order ${data.id}.`;
        return end("Confirmed", text, "confirmed");
      }
      if (data.status === "cancelled") return end("Cancelled", `Order ${data.id} was cancelled.`);
      showPending(data);
      await sleep(jitter(retryAfter || 1));
    }
  },

  async expired() {
    const text = "Your admission ended before you bought; the place went to the next buyer.";
    return end("Your turn has passed", text);
  },

  // Sold out: offer the event's waitlist, if it has one; a buyer already on it goes on
  // following the place.
  async soldOut() {
    show("soldout");
    say("Sold out.");
    const list = await call("GET", waitlistPath(), { auth: false });
    if (list.status !== 200) {
      $("soldout-text").textContent = "Every ticket is taken, and this event has no waitlist.";
      return null;
    }
    const mine = await call("GET", `${waitlistPath()}me/`);
    if (mine.status === 200 && mine.data.status !== "left") return "waitlist";
    const waiting = `Buyers on the waitlist: ${list.data.waiting}.`;
    $("soldout-text").textContent = `Every ticket is taken for now. ${waiting}`;
    $("waitlist-form").hidden = false;
    $("waitlist-form").querySelector("[data-focus]").focus();
    for (;;) {
      const fields = await submitted($("waitlist-form"));
      const body = { quantity: Number(fields.quantity) };
      const { status, data } = await call("POST", `${waitlistPath()}join/`, { body });
      if (status === 200 || status === 201) return "waitlist";
      // not_sold_out: tickets are on sale again; not_in_waiting_room: join the room first.
      if (data.code === "not_sold_out" || data.code === "not_in_waiting_room") return "room";
      $("soldout-error").textContent = data.message; // limit_exceeded, no_waitlist
    }
  },

  // On the waitlist: read the own entry at its Retry-After until tickets are offered.
  async waitlist() {
    show("waitlist");
    say("You are on the waitlist.");
    announcedAt = 0;
    for (;;) {
      const { status, data, retryAfter } = await call("GET", `${waitlistPath()}me/`);
      if (status !== 200 || data.status === "left") return "soldOut";
      spot = data;
      if (data.status === "offered") return "offer";
      if (data.status === "bought") {
        save({ orderId: data.order_id });
        return "order";
      }
      if (data.status === "expired") {
        return end("The offer has ended", "The tickets held for you went to the next buyer.");
      }
      const text = `You are number ${data.position} on the waitlist for ${data.quantity} ticket(s).`;
      $("waitlist-text").textContent = text;
      announce(text);
      const nextLook = sleep(jitter(retryAfter || 5));
      const leave = await Promise.race([submitted($("leave-form")), nextLook]);
      if (leave) {
        await call("DELETE", `${waitlistPath()}me/`);
        return "soldOut";
      }
    }
  },

  // Tickets came back and are held for this buyer until expires_in runs out: buy them as
  // usual (a new key), up to offer_quantity.
  async offer() {
    show("offer");
    const deadline = Date.now() + spot.expires_in * 1000;
    countDown($("offer-countdown"), deadline);
    $("offer-text").textContent = `${spot.offer_quantity} ticket(s) came back, held for you.`;
    $("offer-quantity").max = $("offer-quantity").value = spot.offer_quantity;
    say(`Tickets are held for you: buy them within ${about(spot.expires_in)}.`);
    const fields = await Promise.race([submitted($("offer-form")), sleep(spot.expires_in)]);
    if (!fields) return "waitlist"; // the hold ended: the waitlist says so
    $("offer-error").textContent = "";
    save({ purchase: { key: newKey(), quantity: Number(fields.quantity) } });
    return "purchase";
  },
};

// ------------------------------------------------------------------------- 5. the start

// Run the steps one after another. An answer that needs a new login (401 after a failed
// refresh, a revoked token) brings up the login form, and the page starts over from there.
async function run(step) {
  while (step) {
    try {
      step = await steps[step]();
    } catch (error) {
      if (!(error instanceof LoggedOut)) {
        end("Something went wrong", "Reload the page to try again.");
        throw error;
      }
      keepTokens(null);
      $("login-error").textContent = `${error.message} Log in again: your place is kept.`;
      step = "login";
    }
  }
}

$("logout").addEventListener("click", async () => {
  await call("POST", "/logout/", { body: { refresh: tokens.refresh }, auth: false });
  keepTokens(null);
  location.reload();
});

if (!EVENT_ID) end("Which event?", "Open this page as /buyer/?event=<id>.");
else run(tokens ? "event" : "login");
