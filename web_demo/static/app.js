// The browser demo page: call mode (camera -> demo server over WebRTC, the other side's
// synthesized face back) and portrait mode, both edited with the same sliders.
// Talks to the server on one websocket (/ws); see docs/web_demo.md.
"use strict";

const $ = (id) => document.getElementById(id);
const ROOM_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

let ws = null;
let controls = [];          // [{name, min, max, default, unit, meaning, step}]
const values = {};          // control name -> number (only the ones that differ from default / are set)
let pc = null;
let callId = 0;        // this page's number for its current call: the server's answer names it
let camera = null;
let mic = null;             // the microphone track (null: none, the call is silent from here)
let inCall = false;
let plainTimer = null;
let lastOutbound = null;
let editTimer = null;
let editPending = false;
let lastEditSent = 0;

function say(text, kind = "") {
  const m = $("message");
  m.textContent = text;
  m.className = "message" + (kind ? " " + kind : "");
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(obj)); return true; }
  return false;
}

// -- websocket ------------------------------------------------------------------------------

// the room to share: a link to this page with the room in it
function showShare() {
  const room = $("room").value.trim();
  const link = $("share-link");
  if (!ROOM_NAME.test(room)) { link.textContent = ""; link.removeAttribute("href"); return; }
  const url = new URL(location.href);
  url.search = "";
  url.hash = "";
  url.searchParams.set("room", room);
  link.href = link.textContent = url.toString();
}

function connect() {
  // the page's own scheme: wss:// when it came over HTTPS (a browser refuses ws:// there)
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onopen = () => { $("connection").textContent = "connected to the demo server"; };
  ws.onclose = () => {
    $("connection").textContent = "lost the demo server: reload the page once it runs again";
    say("The connection to the demo server is gone. Reload the page when the server runs again.", "error");
    endCall(false);
  };
  ws.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    handle(m);
  };
}

function handle(m) {
  switch (m.type) {
    case "hello":
      controls = m.controls;
      buildSliders();
      fillStills(m.stills);
      // a room nobody can guess, made by the server, unless the link named one
      if (!$("room").value && m.room) $("room").value = m.room;
      showShare();
      say("Pick a room and start a call (open this page in a second tab or browser with the same room), "
        + "or open a portrait.");
      break;
    case "answer":
      // an answer to a call left meanwhile (hang up and start again before it came) is not this one's
      if (pc && m.id === callId) pc.setRemoteDescription({ type: "answer", sdp: m.sdp }).catch((e) =>
        say(`The video connection to the demo server failed: ${e.message}`, "error"));
      break;
    case "joined":
      if (m.id !== callId) break;
      say(m.text, m.guessable ? "warn" : "ok");
      document.body.dataset.roomGuessable = String(Boolean(m.guessable));
      break;
    case "peer":
      say(m.text, m.state === "left" ? "error" : "ok");
      $("remote").dataset.peer = m.state;
      break;
    case "stats":
      showStats(m);
      break;
    case "status":
      say(m.text);
      break;
    case "ended":
      say(m.text);
      break;
    case "portrait-ready":
      $("portrait-crop").src = m.crop;
      say(m.text, "ok");
      break;
    case "portrait-frame":
      $("portrait-edited").src = m.image;
      $("portrait-edited").dataset.values = JSON.stringify(m.values);
      break;
    case "error":
      say(m.message, "error");
      document.body.dataset.lastError = m.code;
      if (["room-full", "signaling", "bad-room", "browser-connection", "camera", "busy"].includes(m.code))
        endCall(false);
      break;
  }
}

// -- sliders --------------------------------------------------------------------------------

function fmt(v, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  return Number(v).toFixed(Math.min(digits, 3));
}

function buildSliders() {
  const box = $("sliders");
  box.textContent = "";
  for (const c of controls) {
    const row = document.createElement("div");
    row.className = "slider";
    const id = `edit-${c.name}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = c.name.replace("_", " ");
    label.title = `${c.meaning} (${c.unit})`;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id, min: c.min, max: c.max, step: c.step });
    input.value = c.default === null ? c.min : c.default;
    input.dataset.name = c.name;
    input.title = label.title;
    const out = document.createElement("output");
    out.htmlFor = id;
    out.id = `${id}-value`;
    out.textContent = c.default === null ? "off" : fmt(c.default, c.step);
    input.addEventListener("input", () => {
      values[c.name] = Number(input.value);
      out.textContent = fmt(input.value, c.step);
      queueEdit();
    });
    row.append(label, input, out);
    box.append(row);
  }
}

function resetSliders() {
  for (const c of controls) {
    const input = $(`edit-${c.name}`);
    input.value = c.default === null ? c.min : c.default;
    $(`edit-${c.name}-value`).textContent = c.default === null ? "off" : fmt(c.default, c.step);
    delete values[c.name];
  }
  queueEdit();
}

// at most one edit message per 40 ms while a slider moves; the last position always goes out
function queueEdit() {
  const wait = 40 - (performance.now() - lastEditSent);
  if (wait <= 0) { flushEdit(); return; }
  editPending = true;
  if (!editTimer) editTimer = setTimeout(() => { editTimer = null; if (editPending) flushEdit(); }, wait);
}

function flushEdit() {
  editPending = false;
  lastEditSent = performance.now();
  send({ type: "edit", values: { ...values } });
}

// -- call -----------------------------------------------------------------------------------

function waitForIce(conn, ms) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (conn.iceGatheringState === "complete") { conn.removeEventListener("icegatheringstatechange", done); resolve(); } };
    conn.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

function cameraWords(e) {
  switch (e && e.name) {
    case "NotAllowedError": case "SecurityError":
      return "The browser refused the camera (permission denied). Allow the camera for this page "
        + "(the camera icon in the address bar) and start the call again; portrait mode works without one.";
    case "NotFoundError": case "OverconstrainedError":
      return "No camera found. Plug one in and start the call again; portrait mode works without one.";
    case "NotReadableError":
      return "The camera is busy (another program is using it). Close that program and start the call again.";
    default:
      return `The camera could not be opened (${e && e.name ? e.name : e}). Portrait mode works without one.`;
  }
}

async function startCall(ev) {
  ev.preventDefault();
  const room = $("room").value.trim();
  if (!ROOM_NAME.test(room)) { say("A room name is 1-64 letters, digits, '.', '_' or '-'.", "error"); return; }
  if (!ws || ws.readyState !== WebSocket.OPEN) { say("Not connected to the demo server yet.", "error"); return; }
  endCall(false);
  $("start").disabled = true;
  say("Asking the browser for the camera...");
  try {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia)
      throw { name: "SecurityError" };
    camera = await getCameraAndMic();
  } catch (e) {
    camera = null;
    say(cameraWords(e), "error");
    document.body.dataset.lastError = "camera-refused";
    $("start").disabled = false;
    return;
  }
  $("local").srcObject = new MediaStream(camera.getVideoTracks());
  const track = camera.getVideoTracks()[0];
  mic = camera.getAudioTracks()[0] || null;
  const fps = (track.getSettings && track.getSettings().frameRate) || 25;
  pc = new RTCPeerConnection();
  pc.addTrack(track, camera);
  if (mic) pc.addTrack(mic, camera);
  else pc.addTransceiver("audio", { direction: "recvonly" });     // still hear the other side
  // the other side's face and voice come in one stream: the browser keeps them in sync
  pc.ontrack = (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); };
  setMuted(false);
  $("mute").disabled = !mic;
  pc.onconnectionstatechange = () => {
    if (pc && pc.connectionState === "failed") say("The video connection to the demo server failed.", "error");
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 3000);
  } catch (e) {
    say(`Could not set up the video connection: ${e.message}`, "error");
    endCall(false);
    return;
  }
  inCall = true;
  $("hangup").disabled = false;
  say(`Joining room '${room}'...`);
  callId += 1;
  send({ type: "call", room, fps, sdp: pc.localDescription.sdp, id: callId });
  plainTimer = setInterval(measurePlain, 1000);
}

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 25 } };
const VOICE = { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 };

// camera and microphone; without a usable microphone, the camera alone (the call is silent from here)
async function getCameraAndMic() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: VOICE, video: VIDEO });
  } catch (e) {
    if (!["NotFoundError", "NotReadableError", "OverconstrainedError"].includes(e.name)) throw e;
    const video = await navigator.mediaDevices.getUserMedia({ audio: false, video: VIDEO });
    say("No microphone: the other side will not hear you.", "error");
    return video;
  }
}

function setMuted(muted) {
  if (mic) mic.enabled = !muted;
  $("mute").textContent = muted ? "Unmute" : "Mute";
  $("mute").setAttribute("aria-pressed", String(muted));
  document.body.dataset.muted = String(muted);
}

function toggleMute() {
  if (!mic) return;
  const muted = mic.enabled;          // enabled now: this click mutes
  setMuted(muted);
  send({ type: "mute", muted });
  say(muted ? "Muted: the other side hears nothing from you." : "Unmuted.");
}

function endCall(tellServer) {
  if (tellServer && inCall) send({ type: "hangup" });
  inCall = false;
  if (plainTimer) { clearInterval(plainTimer); plainTimer = null; }
  lastOutbound = null;
  if (pc) { pc.close(); pc = null; }
  if (camera) { camera.getTracks().forEach((t) => t.stop()); camera = null; }
  mic = null;
  $("mute").disabled = true;
  $("remote").srcObject = null;
  $("local").srcObject = null;
  $("start").disabled = false;
  $("hangup").disabled = true;
}

// the bitrate the browser's own video encoder uses to send the camera: a plain video call
async function measurePlain() {
  if (!pc) return;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      if (lastOutbound) {
        const dt = (s.timestamp - lastOutbound.timestamp) / 1000;
        if (dt > 0) {
          const kbps = (s.bytesSent - lastOutbound.bytesSent) * 8 / 1000 / dt;
          const res = s.frameWidth ? `, ${s.frameWidth}x${s.frameHeight}` : "";
          const codec = report.get(s.codecId);
          const name = codec ? codec.mimeType.replace("video/", "") : "video";
          $("stat-plain").textContent = `${kbps.toFixed(0)} kbps (${name}${res})`;
          $("stat-plain").dataset.kbps = kbps.toFixed(1);
        }
      }
      lastOutbound = { timestamp: s.timestamp, bytesSent: s.bytesSent };
    }
  });
}

function showStats(s) {
  const kbps = (v) => (v === null || v === undefined ? "-" : `${Number(v).toFixed(2)} kbps`);
  const bytes = (v) => (v ? `${v} B` : "-");
  $("stat-param-kbps").textContent = kbps(s.received_param_kbps);
  $("stat-param-kbps").dataset.kbps = s.received_param_kbps ?? "";
  $("stat-sent-kbps").textContent = kbps(s.sent_param_kbps);
  $("stat-keyframe").textContent = `${bytes(s.received_keyframe_bytes)} / ${bytes(s.sent_keyframe_bytes)}`;
  $("stat-fps").textContent = `${s.fps.toFixed(1)} fps`;
  $("stat-latency").textContent = s.latency_ms === null ? "-" : `${s.latency_ms.toFixed(0)} ms`;
  $("stat-synthesis").textContent = s.synthesis ?? "-";
  $("stat-audio-kbps").textContent = `${kbps(s.received_audio_kbps)} / ${kbps(s.sent_audio_kbps)}`
    + (s.peer_muted ? " (they muted)" : "") + (s.muted ? " (you muted)" : "");
  $("stat-audio-kbps").dataset.kbps = s.received_audio_kbps ?? "";
  const ms = (v) => (v === null || v === undefined ? "-" : `${Number(v).toFixed(0)} ms`);
  $("stat-voice").textContent = `${ms(s.voice_latency_ms)} / ${ms(s.lip_hold_ms)}`;
  $("stat-lost").textContent = `${s.frames_lost} (+${s.frames_undecodable} not shown)`;
  $("stat-face").textContent = s.looking_for_face ? "looking for it..." : "found";
}

// -- portrait -------------------------------------------------------------------------------

function fillStills(names) {
  const sel = $("still");
  for (const n of names) {
    const o = document.createElement("option");
    o.value = o.textContent = n;
    sel.append(o);
  }
}

function openPortrait(ev) {
  ev.preventDefault();
  const file = $("upload").files[0];
  if (file) {
    if (file.size > 12 * 1024 * 1024) { say("That file is too large (at most 12 MB).", "error"); return; }
    const reader = new FileReader();
    reader.onload = () => send({ type: "portrait", data: reader.result });
    reader.onerror = () => say("The browser could not read that file.", "error");
    reader.readAsDataURL(file);
  } else if ($("still").value) {
    send({ type: "portrait", name: $("still").value });
  } else {
    say("Choose a picture from the list or one of your own first.", "error");
    return;
  }
  say("Opening the picture...");
}

function setMode(mode) {
  const call = mode === "call";
  $("call-view").hidden = !call;
  $("portrait-view").hidden = call;
  $("mode-call").classList.toggle("active", call);
  $("mode-portrait").classList.toggle("active", !call);
  $("mode-call").setAttribute("aria-selected", call);
  $("mode-portrait").setAttribute("aria-selected", !call);
}

// -- wiring ---------------------------------------------------------------------------------

$("call-form").addEventListener("submit", startCall);
$("room").addEventListener("input", showShare);
$("hangup").addEventListener("click", () => { endCall(true); say("You left the call."); });
$("mute").addEventListener("click", toggleMute);
$("reset").addEventListener("click", resetSliders);
$("portrait-form").addEventListener("submit", openPortrait);
$("mode-call").addEventListener("click", () => setMode("call"));
$("mode-portrait").addEventListener("click", () => setMode("portrait"));
window.addEventListener("beforeunload", () => endCall(true));
const q = new URLSearchParams(location.search);
if (q.get("room")) $("room").value = q.get("room");
showShare();
if (q.get("mode") === "portrait") setMode("portrait");
connect();
