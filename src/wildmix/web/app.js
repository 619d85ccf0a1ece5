// The wildmix page: uses the same HTTP API as any client (see wildmix/serve.py).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { input: null, inputName: "", noisyUrl: null, enhancedUrl: null };

// --- models -----------------------------------------------------------------------------
async function loadModels() {
  const chosen = $("model").value;
  const models = await (await fetch("/api/models")).json();
  $("model").innerHTML = "";
  for (const m of models) {
    const option = new Option(m.label, m.name);
    $("model").add(option);
  }
  if (chosen && models.some((m) => m.name === chosen)) $("model").value = chosen;
}

// --- choosing, dropping, recording -------------------------------------------------------
function choose(blob, name) {
  state.input = blob;
  state.inputName = name;
  $("chosen").textContent = `${name} (${(blob.size / 1e6).toFixed(2)} MB)`;
  $("go").disabled = false;
}

$("file").addEventListener("change", (e) => {
  if (e.target.files.length) choose(e.target.files[0], e.target.files[0].name);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0], e.dataTransfer.files[0].name);
});

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    status(`no microphone: ${err.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    $("record").classList.remove("recording");
    $("record").textContent = "Record";
    // the server reads WAV, FLAC, Ogg...: decode the browser's recording, send it as WAV
    const buffer = await decode(await new Blob(chunks).arrayBuffer());
    choose(new Blob([wav(buffer)], { type: "audio/wav" }), "recording.wav");
  };
  recorder.start();
  $("record").classList.add("recording");
  $("record").textContent = "Stop";
});

// --- enhancing ---------------------------------------------------------------------------
function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

$("go").addEventListener("click", () => {
  const form = new FormData();
  form.append("audio", state.input, state.inputName);
  form.append("model", $("model").value);
  form.append("dnsmos", "1");  // scores where the server has the 'mos' extra
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/enhance");
  xhr.responseType = "blob";
  const bar = $("progress");
  bar.hidden = false;
  bar.value = 0;
  $("go").disabled = true;
  status("uploading...");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) bar.value = (50 * e.loaded) / e.total;
  };
  xhr.upload.onload = () => { status(`enhancing with ${$("model").value}...`); bar.removeAttribute("value"); };
  xhr.onload = async () => {
    $("go").disabled = false;
    bar.hidden = true;
    if (xhr.status !== 200) {
      const text = await xhr.response.text();
      let message = text;
      try { message = JSON.parse(text).error; } catch (_) { /* not JSON */ }
      status(`error ${xhr.status}: ${message}`, true);
      return;
    }
    const scores = xhr.getResponseHeader("X-Wildmix-DNSMOS");
    await show(state.input, xhr.response, scores ? JSON.parse(scores) : null);
    status(`done: ${state.inputName} enhanced with ${$("model").value}`);
  };
  xhr.onerror = () => { $("go").disabled = false; bar.hidden = true; status("the server did not answer", true); };
  xhr.send(form);
});

async function show(noisyBlob, enhancedBlob, scores) {
  for (const url of [state.noisyUrl, state.enhancedUrl]) if (url) URL.revokeObjectURL(url);
  state.noisyUrl = URL.createObjectURL(noisyBlob);
  state.enhancedUrl = URL.createObjectURL(enhancedBlob);
  $("result").hidden = false;
  $("download").href = state.enhancedUrl;
  $("download").download = state.inputName.replace(/\.[^.]*$/, "") + "-enhanced.wav";
  abSwitch("enhanced");
  const [noisy, enhanced] = await Promise.all([
    decode(await noisyBlob.arrayBuffer()), decode(await enhancedBlob.arrayBuffer())]);
  spectrogram($("spec-noisy"), noisy);
  spectrogram($("spec-enhanced"), enhanced);
  const table = $("dnsmos");
  table.hidden = !scores;
  if (scores) {
    table.tBodies[0].innerHTML = ["noisy", "enhanced"].map((k) =>
      `<tr><th>${k}</th>${["dnsmos_sig", "dnsmos_bak", "dnsmos_ovr"].map((m) =>
        `<td>${scores[k][m].toFixed(2)}</td>`).join("")}</tr>`).join("");
  }
}

// A/B: one player, the source switched at the same position
function abSwitch(which) {
  const player = $("player");
  const at = player.currentTime || 0;
  const playing = !player.paused;
  player.src = which === "noisy" ? state.noisyUrl : state.enhancedUrl;
  player.dataset.source = which;
  player.addEventListener("loadedmetadata", () => {
    player.currentTime = Math.min(at, player.duration || at);
    if (playing) player.play();
  }, { once: true });
  $("play-noisy").classList.toggle("on", which === "noisy");
  $("play-enhanced").classList.toggle("on", which === "enhanced");
}
$("play-noisy").addEventListener("click", () => abSwitch("noisy"));
$("play-enhanced").addEventListener("click", () => abSwitch("enhanced"));

// --- audio helpers -------------------------------------------------------------------------
async function decode(bytes) {
  const context = new OfflineAudioContext(1, 1, 16000);
  return await context.decodeAudioData(bytes);
}

function wav(buffer) {  // an AudioBuffer as 16-bit PCM WAV bytes
  const channels = buffer.numberOfChannels, n = buffer.length, rate = buffer.sampleRate;
  const out = new DataView(new ArrayBuffer(44 + 2 * n * channels));
  const text = (at, s) => [...s].forEach((c, i) => out.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); out.setUint32(4, 36 + 2 * n * channels, true); text(8, "WAVEfmt ");
  out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, channels, true);
  out.setUint32(24, rate, true); out.setUint32(28, rate * 2 * channels, true);
  out.setUint16(32, 2 * channels, true); out.setUint16(34, 16, true);
  text(36, "data"); out.setUint32(40, 2 * n * channels, true);
  const data = [...Array(channels).keys()].map((c) => buffer.getChannelData(c));
  for (let i = 0, at = 44; i < n; i++) {
    for (let c = 0; c < channels; c++, at += 2) {
      out.setInt16(at, Math.max(-1, Math.min(1, data[c][i])) * 32767, true);
    }
  }
  return out.buffer;
}

function fft(re, im) {  // in place, radix 2
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const angle = (-2 * Math.PI) / len;
    for (let i = 0; i < n; i += len) {
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(angle * k), wi = Math.sin(angle * k);
        const a = i + k, b = a + len / 2;
        const xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr; im[b] = im[a] - xi; re[a] += xr; im[a] += xi;
      }
    }
  }
}

function spectrogram(canvas, buffer) {  // log-magnitude STFT of channel 0, 0..8 kHz shown
  const x = buffer.getChannelData(0), size = 512;
  const columns = canvas.width, rows = canvas.height;
  const hop = Math.max(1, Math.floor((x.length - size) / columns));
  const top = Math.min(size / 2, Math.floor((8000 / buffer.sampleRate) * size));
  const image = canvas.getContext("2d").createImageData(columns, rows);
  const window = Float32Array.from({ length: size }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size));
  const frames = [];
  let peak = -Infinity;
  for (let c = 0; c < columns; c++) {
    const re = new Float32Array(size), im = new Float32Array(size);
    for (let i = 0; i < size; i++) re[i] = (x[c * hop + i] || 0) * window[i];
    fft(re, im);
    const db = new Float32Array(top);
    for (let k = 0; k < top; k++) {
      db[k] = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12);
      peak = Math.max(peak, db[k]);
    }
    frames.push(db);
  }
  for (let c = 0; c < columns; c++) {
    for (let r = 0; r < rows; r++) {
      const k = Math.floor(((rows - 1 - r) / rows) * top);
      const v = Math.max(0, Math.min(1, (frames[c][k] - peak + 80) / 80));
      const at = 4 * (r * columns + c);
      image.data[at] = 255 * Math.min(1, 2 * v);
      image.data[at + 1] = 255 * Math.max(0, 2 * v - 1);
      image.data[at + 2] = 255 * Math.max(0, 1 - 3 * v) * v * 3;
      image.data[at + 3] = 255;
    }
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  canvas.dataset.drawn = "true";
}

// --- adaptation ------------------------------------------------------------------------------
const polling = new Set();
let timer = null;

$("adapt-go").addEventListener("click", async () => {
  const files = $("adapt-files").files;
  if (!files.length) { status("choose recordings (or a .zip) to adapt to", true); return; }
  const form = new FormData();
  for (const f of files) form.append("audio", f, f.name);
  form.append("minutes", $("adapt-minutes").value);
  $("adapt-go").disabled = true;
  const answer = await fetch("/api/adapt", { method: "POST", body: form });
  $("adapt-go").disabled = false;
  const body = await answer.json();
  if (!answer.ok) { status(`error ${answer.status}: ${body.error}`, true); return; }
  await refreshJobs();
});

function describe(job) {
  const parts = [`${job.job}: ${job.state}`, `step ${job.step}${job.max_steps ? " of " + job.max_steps : ""}`];
  if (job.criterion) parts.push(`${job.criterion.name.replace("valid_", "")} ${job.criterion.value.toFixed(2)}`);
  if (job.state === "running" && job.seconds_left != null) parts.push(`about ${Math.ceil(job.seconds_left / 60)} min left`);
  if (job.error) parts.push(job.error);
  return parts.join(" · ");
}

async function refreshJobs() {
  const jobs = await (await fetch("/api/jobs")).json();
  $("jobs").innerHTML = "";
  let finished = false;
  for (const job of jobs) {
    const item = document.createElement("li");
    const bar = document.createElement("progress");
    bar.max = job.max_steps || 1;
    bar.value = job.state === "done" ? bar.max : job.step;
    const text = document.createElement("span");
    text.textContent = describe(job);
    if (job.state === "failed") text.className = "error";
    item.append(bar, text);
    $("jobs").append(item);
    if (job.state === "running") polling.add(job.job);
    else if (polling.delete(job.job)) finished = true;
  }
  if (finished) await loadModels();  // a finished adaptation joins the model list
  if (polling.size && !timer) timer = setTimeout(() => { timer = null; refreshJobs(); }, 2000);
}

loadModels();
refreshJobs();  // a running adaptation survives a page reload: the server keeps its state
