// The ring, live: the banks on a circle (SVG) and the token moving around it.
//
// Fed by the bank's server-sent events (GET /api/v1/ring/events, event "ring"). Each event
// names the holder (or the last member seen with the token), the generation and sequence
// of the token, and every member up or down. A newer generation is a token minted by a
// claim after a loss: the view marks it for a few seconds so a room can see it happen.

import { t } from "./i18n.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const SIZE = 600; // the SVG's own coordinate space; CSS scales it to the screen
const RADIUS = 200;
const NODE_RADIUS = 60;
const TOKEN_RADIUS = 20;
const MOVE_MS = 180; // one hop's animation; shorter than the feed's interval
const MINT_MARK_MS = 6_000; // how long the "new token minted" mark stays up
const HISTORY_HOLDERS_MAX = 12;

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function angleOf(index, count) {
  return -Math.PI / 2 + (2 * Math.PI * index) / Math.max(1, count);
}

export class RingView {
  constructor(root, { selfId = null } = {}) {
    this.root = root;
    this.selfId = selfId;
    this.svg = root.querySelector("svg.ring");
    this.source = null;
    this.event = null;
    this.order = [];
    this.nodes = new Map();
    this.tokenAngle = null;
    this.animation = null;
    this.mintTimer = null;
    this.hops = 0;
    this.holders = [];
    this.visible = false;
  }

  start() {
    if (this.source) return;
    this.visible = true;
    this.setStatus(t("ring_connecting"));
    this.source = new EventSource("/api/v1/ring/events");
    this.source.addEventListener("ring", (message) => {
      this.setStatus("");
      try {
        this.update(JSON.parse(message.data));
      } catch (error) {
        console.error("ring event", error);
      }
    });
    this.source.addEventListener("error", () => this.setStatus(t("ring_lost")));
  }

  stop() {
    this.visible = false;
    if (this.source) this.source.close();
    this.source = null;
  }

  setStatus(text) {
    const status = this.root.querySelector("[data-ring-status]");
    if (status) status.textContent = text;
  }

  layout(banks) {
    const ids = banks.map((b) => b.id);
    if (ids.join(",") === this.order.join(",")) return;
    this.order = ids;
    this.nodes.clear();
    this.svg.replaceChildren();
    this.svg.setAttribute("viewBox", `0 0 ${SIZE} ${SIZE}`);
    const c = SIZE / 2;
    el("circle", { cx: c, cy: c, r: RADIUS, class: "ring-track" }, this.svg);
    banks.forEach((bank, index) => {
      const a = angleOf(index, banks.length);
      const x = c + RADIUS * Math.cos(a);
      const y = c + RADIUS * Math.sin(a);
      const g = el("g", { class: "ring-node", "data-bank": bank.id }, this.svg);
      el("circle", { cx: x, cy: y, r: NODE_RADIUS, class: "ring-node-disc" }, g);
      const cross = el("path", {
        d: `M ${x - 30} ${y - 30} L ${x + 30} ${y + 30} M ${x + 30} ${y - 30} L ${x - 30} ${y + 30}`,
        class: "ring-node-cross",
      }, g);
      const label = el("text", { x, y: y - 12, class: "ring-node-id", "text-anchor": "middle" }, g);
      label.textContent = bank.id;
      const state = el("text", { x, y: y + 14, class: "ring-node-state", "text-anchor": "middle" }, g);
      const visits = el("text", { x, y: y + 40, class: "ring-node-visits", "text-anchor": "middle" }, g);
      const title = el("title", {}, g);
      this.nodes.set(bank.id, { g, state, visits, cross, title, angle: a, bank });
    });
    const token = el("g", { class: "ring-token", "data-token": "" }, this.svg);
    el("circle", { cx: 0, cy: 0, r: TOKEN_RADIUS }, token);
    this.token = token;
    this.tokenAngle = null;
  }

  update(event, { redraw = false } = {}) {
    const previous = redraw ? null : this.event;
    this.event = event;
    this.layout(event.banks || []);
    const down = [];
    for (const bank of event.banks || []) {
      const node = this.nodes.get(bank.id);
      if (!node) continue;
      const isDown = event.members?.[bank.id] === "down";
      if (isDown) down.push(bank.id);
      const otherFile = !isDown && bank.same_ring_file === false;
      node.g.classList.toggle("down", isDown);
      node.g.classList.toggle("other-file", otherFile);
      node.g.classList.toggle("holder", bank.id === event.holder);
      node.g.classList.toggle("self", bank.id === (event.bank || this.selfId));
      const state = isDown ? t("state_down") : otherFile ? t("state_other_file") : t("state_up");
      node.state.textContent = state;
      node.visits.textContent =
        bank.visits != null ? t(bank.visits === 1 ? "visits_one" : "visits_many", { n: bank.visits }) : "";
      node.title.textContent = `${bank.name} (${bank.id}) · ${state}` +
        (bank.visits != null ? ` · ${t(bank.visits === 1 ? "visits_one" : "visits_many", { n: bank.visits })}` : "");
    }
    this.root.dataset.holder = event.holder || "";
    this.root.dataset.generation = event.generation ?? "";
    if (redraw) {
      this.renderFacts(event, down);
      return;
    }
    this.moveToken(event.holder);
    if (previous && event.holder && previous.holder !== event.holder) this.hops += 1;
    if (event.holder && this.holders[0] !== event.holder) {
      this.holders.unshift(event.holder);
      this.holders.length = Math.min(this.holders.length, HISTORY_HOLDERS_MAX);
    }
    const newGeneration =
      event.minted ||
      (previous && event.generation != null && previous.generation != null && event.generation > previous.generation);
    if (newGeneration) this.markMinted(event.generation, event.issuer);
    this.renderFacts(event, down);
  }

  renderFacts(event, down) {
    const byId = new Map((event.banks || []).map((b) => [b.id, b]));
    const set = (name, text) => {
      const node = this.root.querySelector(`[data-ring-${name}]`);
      if (node) node.textContent = text;
    };
    const holder = event.holder ? byId.get(event.holder) : null;
    set("holder-label", event.holder_confirmed ? t("holder") : t("holder_last"));
    set("holder", holder ? `${holder.name} (${holder.id})` : "—");
    set("generation", event.generation ?? "—");
    set("seq", event.seq ?? "—");
    set("down", down.length ? down.join(", ") : t("none"));
    set("hops", String(this.hops));
    const visits = (event.banks || []).reduce((sum, b) => sum + (b.visits ?? 0), 0);
    set("visits", String(visits));
    // The holders this screen observed, newest first: samples, not hops (the token may have
    // passed other banks between two of them), so no arrows between them.
    set("trail", this.holders.join(", "));
    const trail = this.root.querySelector(".trail");
    if (trail) trail.hidden = this.holders.length === 0;
    this.root.querySelector("[data-ring-down]")?.classList.toggle("alarm", down.length > 0);
    // Members that answer with another ring file than this bank's (see docs/transport.md).
    const others = (event.banks || []).filter((b) => b.same_ring_file === false && event.members?.[b.id] !== "down");
    const warning = this.root.querySelector("[data-ring-other-files]");
    if (warning) {
      warning.hidden = others.length === 0;
      warning.textContent = others.length ? t("other_ring_file", { banks: others.map((b) => b.id).join(", ") }) : "";
    }
  }

  moveToken(holder) {
    if (!this.token) return;
    const node = holder ? this.nodes.get(holder) : null;
    this.token.classList.toggle("hidden", !node);
    if (!node) return;
    const target = node.angle;
    const from = this.tokenAngle;
    if (from === null || !this.visible) {
      this.placeToken(target);
      return;
    }
    // The token travels forward around the ring (clockwise), as it does in the protocol.
    let delta = target - from;
    while (delta < 0) delta += 2 * Math.PI;
    while (delta >= 2 * Math.PI) delta -= 2 * Math.PI;
    if (this.animation) cancelAnimationFrame(this.animation);
    const started = performance.now();
    const step = (now) => {
      const k = Math.min(1, (now - started) / MOVE_MS);
      const eased = 1 - (1 - k) * (1 - k);
      this.placeToken(from + delta * eased);
      this.animation = k < 1 ? requestAnimationFrame(step) : null;
    };
    this.animation = requestAnimationFrame(step);
  }

  placeToken(angle) {
    this.tokenAngle = angle;
    const c = SIZE / 2;
    const x = c + RADIUS * Math.cos(angle);
    const y = c + RADIUS * Math.sin(angle);
    // Drawn just inside the circle so that it never hides the bank's name.
    const inner = (RADIUS - NODE_RADIUS - TOKEN_RADIUS - 6) / RADIUS;
    this.token.setAttribute("transform", `translate(${c + (x - c) * inner} ${c + (y - c) * inner})`);
  }

  markMinted(generation, issuer) {
    const mark = this.root.querySelector("[data-ring-minted]");
    if (!mark) return;
    mark.textContent = issuer ? t("minted_by", { generation, issuer }) : t("minted", { generation });
    mark.classList.add("shown");
    mark.classList.remove("flash");
    void mark.offsetWidth; // restart the CSS animation
    mark.classList.add("flash");
    this.root.classList.add("minting");
    clearTimeout(this.mintTimer);
    this.mintTimer = setTimeout(() => {
      mark.classList.remove("shown", "flash");
      mark.textContent = "";
      this.root.classList.remove("minting");
    }, MINT_MARK_MS);
  }

  relabel() {
    if (this.event) this.update(this.event, { redraw: true });
  }
}
