// The fcpose serve page: a photo (chosen or dropped) or webcam frames go to POST /v1/predict; the people
// marked "drawn" in the answer are drawn on the canvas (box, score, skeleton) and counted in #count.
// Plain JavaScript, no dependencies. #count carries data-state ("idle", "busy", "done", "error") and
// data-count (people drawn) for scripts and tests.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"];

let lastPhoto = null;       // {blob, type} of the last photo, re-sent when the threshold changes
let camera = null;          // {stream, running} while the webcam runs
let keypointThreshold = 0.05;

function threshold() { return Number($("threshold").value); }

function showError(message) {
  const el = $("error");
  el.textContent = message || "";
  el.hidden = !message;
}

function setCount(state, count, text) {
  const el = $("count");
  el.dataset.state = state;
  el.dataset.count = count === null ? "" : String(count);
  el.textContent = text;
}

async function loadModelInfo() {
  try {
    const resp = await fetch("/v1/model");
    const info = await resp.json();
    const parts = [info.preset || "model", info.backend, info.device];
    if (info.trained_on) parts.push("trained on " + info.trained_on);
    $("model").textContent = parts.filter(Boolean).join(" · ");
    if (info.defaults) {
      $("threshold").value = info.defaults.draw_threshold;
      $("threshold-value").textContent = Number(info.defaults.draw_threshold).toFixed(2);
      keypointThreshold = info.defaults.keypoint_threshold;
    }
  } catch (err) {
    $("model").textContent = "server not reachable";
  }
}

// POST one image; resolves to the JSON answer or throws an Error with the server's one-line message.
async function predict(blob, type) {
  const t = threshold();
  const query = new URLSearchParams({draw_threshold: t, score_threshold: t});
  const resp = await fetch("/v1/predict?" + query, {
    method: "POST", headers: {"Content-Type": type || "application/octet-stream"}, body: blob});
  let body = null;
  try { body = await resp.json(); } catch (err) { /* not JSON */ }
  if (!resp.ok) throw new Error((body && body.error) || ("HTTP " + resp.status));
  return body;
}

function drawPeople(result, scale) {
  const lw = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 250));
  const kthr = result.thresholds ? result.thresholds.keypoint : keypointThreshold;
  ctx.font = `${Math.max(12, 6 * lw)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  let n = 0;
  for (const person of result.people) {
    if (!person.drawn) continue;
    const color = COLORS[n % COLORS.length];
    n += 1;
    const [x1, y1, x2, y2] = person.bbox.map((v) => v * scale);
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = person.score.toFixed(2);
    const w = ctx.measureText(label).width + 2 * lw;
    const h = Math.max(12, 6 * lw) + lw;
    const ly = y1 - h < 0 ? y1 + h : y1;
    ctx.fillStyle = color;
    ctx.fillRect(x1, ly - h, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + lw, ly - lw / 2);
    const kp = person.keypoints.map(([x, y, s]) => [x * scale, y * scale, s]);
    ctx.lineWidth = 1.5 * lw;
    for (const [a, b] of result.skeleton) {
      if (kp[a][2] <= kthr || kp[b][2] <= kthr) continue;
      ctx.beginPath();
      ctx.moveTo(kp[a][0], kp[a][1]);
      ctx.lineTo(kp[b][0], kp[b][1]);
      ctx.stroke();
    }
    ctx.fillStyle = color;
    for (const [x, y, s] of kp) {
      if (s <= kthr) continue;
      ctx.beginPath();
      ctx.arc(x, y, 1.5 * lw, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  return n;
}

// Draw the image (an ImageBitmap, canvas or video frame of width x height) and the people found in it.
function render(source, width, height, result) {
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  ctx.drawImage(source, 0, 0, width, height);
  $("stage").classList.add("has-image");
  return drawPeople(result, width / result.image.width);
}

function people(n) { return `${n} ${n === 1 ? "person" : "people"}`; }

async function runPhoto(blob, type) {
  lastPhoto = {blob, type};
  showError("");
  setCount("busy", null, "detecting…");
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {imageOrientation: "from-image"});
  } catch (err) {
    bitmap = null;  // the server still says why (unsupported or broken image)
  }
  try {
    const started = performance.now();
    const result = await predict(blob, type);
    const elapsed = performance.now() - started;
    if (!bitmap) throw new Error("the browser cannot show this image");
    const n = render(bitmap, bitmap.width, bitmap.height, result);
    setCount("done", n, people(n));
    $("details").textContent = `score ≥ ${result.thresholds.draw.toFixed(2)} · ${result.image.width}×` +
      `${result.image.height} · ${Math.round(elapsed)} ms (model ${Math.round(result.timings_ms.inference)} ms, ` +
      `batch of ${result.batch_size})`;
  } catch (err) {
    setCount("error", null, "no result");
    $("details").textContent = "";
    showError(err.message);
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("no webcam access here (browsers allow it on https:// or http://localhost pages only)");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}});
  } catch (err) {
    showError("webcam: " + err.message);
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  camera = {stream, running: true};
  $("camera").textContent = "Stop webcam";
  $("camera").classList.add("active");
  showError("");
  const frame = document.createElement("canvas");
  const fctx = frame.getContext("2d");
  let frames = 0;
  const since = performance.now();
  // one request at a time: the next frame is sent when the answer to this one is back, so the frame rate
  // is the rate the server keeps up with
  while (camera && camera.running) {
    const width = video.videoWidth, height = video.videoHeight;
    if (!width || !height) { await new Promise((r) => setTimeout(r, 50)); continue; }
    frame.width = width;
    frame.height = height;
    fctx.drawImage(video, 0, 0, width, height);
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
    try {
      const started = performance.now();
      const result = await predict(blob, "image/jpeg");
      if (!camera || !camera.running) break;
      const n = render(frame, width, height, result);
      frames += 1;
      const fps = frames / ((performance.now() - since) / 1000);
      setCount("done", n, people(n));
      $("details").textContent = `webcam ${width}×${height} · ${fps.toFixed(1)} frames/s · ` +
        `${Math.round(performance.now() - started)} ms per frame`;
      showError("");
    } catch (err) {
      showError(err.message);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function stopCamera() {
  if (!camera) return;
  camera.running = false;
  for (const track of camera.stream.getTracks()) track.stop();
  camera = null;
  $("camera").textContent = "Start webcam";
  $("camera").classList.remove("active");
}

function choose(file) {
  if (!file) return;
  stopCamera();
  runPhoto(file, file.type);
}

$("file").addEventListener("change", (e) => { choose(e.target.files[0]); e.target.value = ""; });
$("camera").addEventListener("click", () => (camera ? stopCamera() : startCamera()));
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = threshold().toFixed(2);
});
$("threshold").addEventListener("change", () => { if (lastPhoto && !camera) runPhoto(lastPhoto.blob, lastPhoto.type); });
const stage = $("stage");
stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
stage.addEventListener("drop", (e) => {
  e.preventDefault();
  stage.classList.remove("dragging");
  choose(e.dataTransfer.files[0]);
});
loadModelInfo();
