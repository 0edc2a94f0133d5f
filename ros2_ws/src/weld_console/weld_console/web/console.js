// weldvision operator console: plain ES module, no framework, no build step, nothing from a CDN.
// Talks to the console node: /api/* (JSON) and /ws (live previews, results, status).

const $ = (id) => document.getElementById(id);
const stats = { previews: 0, delays: [], lastSeq: 0, results: 0 };
window.weldConsole = stats; // read by the page tests and the benchmark

let config = null;
let token = sessionStorage.getItem('weldConsoleToken') || '';
let currentTab = 'label';
let reviewItems = [];
let lastModelId = null;
let lastActiveSession = null;
let sessionsTimer = 0;
let continuousWanted = null; // the continuous toggle as set here, until the labeler's status agrees

function takeTokenFromAddress() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    token = decodeURIComponent(match[1]);
    sessionStorage.setItem('weldConsoleToken', token);
    history.replaceState(null, '', location.pathname); // the token leaves the address bar
  }
}

async function api(method, path, body, contentType = 'application/json') {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store' };
  if (method !== 'GET') {
    headers['Content-Type'] = contentType;
    init.body = contentType === 'application/json' ? JSON.stringify(body || {}) : body;
  }
  const response = await fetch(path, init);
  let data = {};
  try {
    data = await response.json();
  } catch (error) {
    data = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) askForToken(data.error);
  return { ok: response.ok, status: response.status, data };
}

function say(text, isError = false) {
  const line = $('message');
  line.textContent = text;
  line.classList.toggle('error', isError);
}

function sayAnswer(answer) {
  const text = answer.data.message || answer.data.error || `${answer.status}`;
  say(text, !answer.ok);
  return answer.ok;
}

function askForToken(reason) {
  $('token-form').hidden = false;
  if (reason) say(reason, true);
}

// ---- live view -------------------------------------------------------------------------------
const imageUrls = { rgb: '', depth: '' };

function showImage(element, key, bytes, onShown) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'image/jpeg' }));
  element.onload = () => {
    if (imageUrls[key]) URL.revokeObjectURL(imageUrls[key]);
    imageUrls[key] = url;
    if (onShown) onShown();
  };
  element.src = url;
}

function onPreview(buffer) {
  const view = new DataView(buffer);
  const headerLength = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
  const start = 4 + headerLength;
  const rgb = new Uint8Array(buffer, start, header.rgb_bytes);
  const depth = new Uint8Array(buffer, start + header.rgb_bytes, header.depth_bytes);
  showImage($('rgb'), 'rgb', rgb, () => {
    stats.previews += 1;
    stats.lastSeq = header.seq;
    stats.delays.push(Date.now() - header.stamp_ns / 1e6); // camera stamp to picture shown
    if (stats.delays.length > 5000) stats.delays.shift();
  });
  showImage($('depth'), 'depth', depth);
  $('legend-near').textContent = header.near_mm.toFixed(0);
  $('legend-far').textContent = header.far_mm.toFixed(0);
  const health = header.health;
  const line = $('health');
  const shares = `depth dropout ${(100 * health.depth_dropout).toFixed(1)} %, ` +
    `saturated ${(100 * health.saturated).toFixed(1)} %`;
  line.textContent = health.fit ? `sensor ok: ${shares}` : `${health.warning} (${shares})`;
  line.classList.toggle('error', !health.fit);
}

function onResult(result) {
  stats.results += 1;
  $('result-label').textContent = result.label || '(undecided)';
  $('result-source').textContent = result.source;
  $('result-source').className = `pill ${result.source === 'model' ? 'good' : 'warnpill'}`;
  $('result-latency').textContent = `${result.latency_ms.toFixed(0)} ms`;
  $('result-model').textContent = result.model_id ? `model ${result.model_id}` : 'rules';
  $('result-fallback').textContent = result.fallback_reason || '';
  const scores = $('scores');
  scores.replaceChildren(...result.class_names.map((name, index) => {
    const row = document.createElement('div');
    row.className = 'score';
    const label = document.createElement('span');
    label.textContent = name;
    const bar = document.createElement('span');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.className = name === result.label ? 'fill win' : 'fill';
    fill.style.width = `${(100 * result.scores[index]).toFixed(1)}%`;
    bar.append(fill);
    const value = document.createElement('span');
    value.textContent = result.scores[index].toFixed(2);
    row.append(label, bar, value);
    return row;
  }));
}

function onMeasurements(message) {
  const cells = Object.entries(message.values).flatMap(([key, value]) => {
    const name = document.createElement('span');
    name.textContent = key.replaceAll('_', ' ');
    const cell = document.createElement('span');
    cell.className = 'value';
    cell.textContent = Number.isInteger(value) ? `${value}` : value.toFixed(2);
    return [name, cell];
  });
  const title = document.createElement('h4');
  title.textContent = `rules' measurements (rules say ${message.rules_label || '-'})`;
  $('measurements').replaceChildren(title, ...cells);
}

function onStatus(status) {
  const labeler = status.labeler;
  const inference = status.inference;
  $('labeler-heard').textContent = labeler.heard ? 'labeler ok' : 'labeler not heard';
  $('labeler-heard').className = `pill ${labeler.heard ? 'good' : 'bad'}`;
  $('inference-heard').textContent = inference.heard
    ? `inference: ${inference.model_id || 'rules only'}` : 'inference not heard';
  $('inference-heard').className = `pill ${inference.heard ? 'good' : 'bad'}`;
  $('active-session').textContent = labeler.active_session || 'none';
  if (labeler.active_session !== lastActiveSession) {
    lastActiveSession = labeler.active_session; // started or stopped here or elsewhere (weld-label)
    scheduleSessions();
  }
  const counts = Object.entries(labeler.active_counts || {}).map(([k, v]) => `${k} ${v}`).join(', ');
  $('active-counts').textContent = labeler.active_session
    ? `${labeler.session_pairs_recorded} pairs recorded${counts ? ` (${counts})` : ''}` : '';
  $('continuous-state').textContent = labeler.continuous_label
    ? `labelling every pair ${labeler.continuous_label}` : '';
  // the toggle follows the labeler, except while a change made here is not in its status yet (checked
  // with no class pressed yet, or just cleared): a status sent before it must not undo it
  const continuousOn = Boolean(labeler.continuous_label);
  if (continuousWanted === continuousOn) continuousWanted = null;
  $('continuous').checked = continuousWanted ?? continuousOn;
  if (inference.model_id !== lastModelId) {
    lastModelId = inference.model_id; // the node switched models: the panel follows
    if (currentTab === 'models') loadModels();
  }
  const review = status.review;
  $('review-count').textContent = review.queued;
  $('review-session').textContent = review.open_session
    ? `open review session ${review.open_session}: ${review.open_session_labels} labelled` : '';
}

function onCaptures(message) {
  $('captures').replaceChildren(...message.items.map((item) => {
    const figure = document.createElement('figure');
    // no picture when the label came after its frame had left the console's buffer
    const image = document.createElement(item.thumbnail ? 'img' : 'div');
    if (item.thumbnail) {
      image.src = item.thumbnail;
      image.alt = item.label;
    } else {
      image.className = 'nopicture';
      image.textContent = 'no picture';
    }
    const caption = document.createElement('figcaption');
    caption.textContent = item.label;
    figure.append(image, caption);
    return figure;
  }));
  scheduleSessions();
}

let socket = null;
function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: 'hello', token }));
    $('link').textContent = 'live';
    $('link').className = 'pill good';
  };
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) {
      onPreview(event.data);
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === 'result') onResult(message);
    else if (message.type === 'measurements') onMeasurements(message);
    else if (message.type === 'status') onStatus(message);
    else if (message.type === 'captures') onCaptures(message);
    else if (message.type === 'review') loadReview();
  };
  socket.onclose = (event) => {
    $('link').textContent = 'disconnected';
    $('link').className = 'pill bad';
    if (event.code === 4401) {
      askForToken('the console refused the token');
      return;
    }
    setTimeout(connect, 1000);
  };
}

// ---- labelling -------------------------------------------------------------------------------
function classButtons(container, onPress) {
  container.replaceChildren(...config.classes.map((name, index) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'class';
    button.dataset.label = name;
    button.textContent = `${index + 1} ${name}`;
    button.addEventListener('click', () => onPress(name));
    return button;
  }));
}

async function capture(label) {
  if ($('continuous').checked) {
    sayAnswer(await api('POST', '/api/continuous', { label }));
    return;
  }
  const count = Math.max(1, parseInt($('burst').value, 10) || 1);
  say(`capturing ${count} ${label} pair(s)...`);
  const answer = await api('POST', '/api/capture', { label, count, note: '' });
  sayAnswer(answer);
  scheduleSessions();
}

async function startSession(event) {
  event.preventDefault();
  const fields = Object.fromEntries(new FormData($('session-form')).entries());
  sayAnswer(await api('POST', '/api/session/start', fields));
  scheduleSessions();
}

async function stopSession() {
  sayAnswer(await api('POST', '/api/session/stop', {}));
  scheduleSessions();
}

async function toggleContinuous() {
  continuousWanted = $('continuous').checked;
  if (!$('continuous').checked) sayAnswer(await api('POST', '/api/continuous', { label: '' }));
  else say('continuous: press a class to label every pair with it');
}

async function download(path) {
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!response.ok) {
    say(`download failed: ${response.status}`, true);
    return;
  }
  const link = document.createElement('a');
  link.href = URL.createObjectURL(await response.blob());
  link.download = path.split('/').pop();
  document.body.append(link);
  link.click();
  link.remove();
}

async function exportSession(kind, sessionId) {
  const path = kind === 'review' ? `/api/review/sessions/${sessionId}/export` : `/api/sessions/${sessionId}/export`;
  const answer = await api('POST', path, {});
  if (sayAnswer(answer) && answer.data.download) await download(answer.data.download);
}

function scheduleSessions() {
  clearTimeout(sessionsTimer);
  sessionsTimer = setTimeout(loadSessions, 300);
}

async function loadSessions() {
  const answer = await api('GET', '/api/sessions');
  if (!answer.ok) return;
  const head = document.createElement('tr');
  for (const title of ['session', 'kind', 'pairs', ...config.classes, '']) {
    const cell = document.createElement('th');
    cell.textContent = title;
    head.append(cell);
  }
  const rows = answer.data.sessions.slice().reverse().map((session) => {
    const row = document.createElement('tr');
    row.dataset.session = session.session_id;
    const cells = [session.session_id + (session.active ? ' (recording)' : ''), session.kind, session.pairs_recorded,
      ...config.classes.map((name) => session.label_counts[name] || 0)];
    for (const value of cells) {
      const cell = document.createElement('td');
      cell.textContent = `${value}`;
      row.append(cell);
    }
    const action = document.createElement('td');
    if (!session.active) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'export .tar.gz';
      button.addEventListener('click', () => exportSession(session.kind, session.session_id));
      action.append(button);
    }
    row.append(action);
    return row;
  });
  $('sessions').replaceChildren(head, ...rows);
}

// ---- review queue ----------------------------------------------------------------------------
async function loadReview() {
  const answer = await api('GET', '/api/review');
  if (!answer.ok) return;
  reviewItems = answer.data.items;
  $('review-count').textContent = reviewItems.length;
  showReviewItem();
  $('review-list').replaceChildren(...reviewItems.slice(0, 24).map((item) => {
    const figure = document.createElement('figure');
    const image = document.createElement('img');
    image.alt = item.model_label;
    image.title = item.why;
    loadAuthorisedImage(image, `/api/review/${item.item_id}/rgb.jpg`);
    const caption = document.createElement('figcaption');
    caption.textContent = item.reasons.slice().sort().join(' + ');
    figure.append(image, caption);
    return figure;
  }));
}

const reviewImages = new Map(); // path -> object URL: a queued frame's pictures never change

async function loadAuthorisedImage(image, path) {
  if (!reviewImages.has(path)) {
    const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    if (!response.ok) return;
    reviewImages.set(path, URL.createObjectURL(await response.blob()));
  }
  image.src = reviewImages.get(path);
}

function showReviewItem() {
  const item = reviewItems[0];
  $('review-current').dataset.item = item ? item.item_id : '';
  if (!item) {
    $('review-why').textContent = 'the review queue is empty';
    $('review-rgb').removeAttribute('src');
    $('review-depth').removeAttribute('src');
    return;
  }
  $('review-why').textContent = item.why;
  loadAuthorisedImage($('review-rgb'), `/api/review/${item.item_id}/rgb.jpg`);
  loadAuthorisedImage($('review-depth'), `/api/review/${item.item_id}/depth.jpg`);
}

async function labelReview(label) {
  const item = reviewItems[0];
  if (!item) return say('the review queue is empty', true);
  if (sayAnswer(await api('POST', `/api/review/${item.item_id}/label`, { label }))) {
    reviewItems.shift();
    showReviewItem();
    loadReview();
  }
  return undefined;
}

async function discardReview() {
  const item = reviewItems[0];
  if (!item) return;
  if (sayAnswer(await api('POST', `/api/review/${item.item_id}/discard`, {}))) loadReview();
}

async function finishReview() {
  sayAnswer(await api('POST', '/api/review/finish', {}));
  scheduleSessions();
}

// ---- models ----------------------------------------------------------------------------------
async function loadModels() {
  const answer = await api('GET', '/api/models');
  if (!answer.ok) return;
  const listing = answer.data;
  $('model-running').textContent = listing.running.model_id || 'none (the rules answer)';
  $('model-status').textContent = listing.running.status;
  const head = document.createElement('tr');
  for (const title of ['file', 'model', 'classes', 'validation', 'state', '']) {
    const cell = document.createElement('th');
    cell.textContent = title;
    head.append(cell);
  }
  const rows = listing.files.map((file) => {
    const row = document.createElement('tr');
    row.dataset.file = file.name;
    const metrics = file.validation_metrics
      ? Object.entries(file.validation_metrics).filter(([, v]) => typeof v === 'number')
        .map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')
      : '';
    const state = file.running ? 'running' : file.rejected ? `rejected: ${file.rejected}` : file.problem || 'valid';
    for (const value of [file.name, file.model_id || '', (file.class_names || []).join(', '), metrics, state]) {
      const cell = document.createElement('td');
      cell.textContent = value;
      row.append(cell);
    }
    const action = document.createElement('td');
    if (!file.running && !file.rejected && !file.problem) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'switch to';
      button.addEventListener('click', async () => {
        sayAnswer(await api('POST', '/api/models/select', { name: file.name }));
        setTimeout(loadModels, 1500);
      });
      action.append(button);
    }
    row.append(action);
    return row;
  });
  $('models').replaceChildren(head, ...rows);
}

async function upload(event) {
  event.preventDefault();
  const file = $('upload-file').files[0];
  if (!file) return say('choose an .onnx file first', true);
  if (file.size > config.max_upload_bytes) {
    return say(`${file.name} is ${file.size} bytes, the limit is ${config.max_upload_bytes}`, true);
  }
  say(`uploading and checking ${file.name}...`);
  const path = `/api/models/upload?name=${encodeURIComponent(file.name)}`;
  sayAnswer(await api('POST', path, file, 'application/octet-stream'));
  loadModels();
  return undefined;
}

// ---- tabs and keys ---------------------------------------------------------------------------
function showTab(name) {
  currentTab = name;
  for (const button of document.querySelectorAll('.tab')) button.classList.toggle('active', button.dataset.tab === name);
  for (const body of document.querySelectorAll('.tab-body')) body.hidden = body.id !== `tab-${name}`;
  if (name === 'review') loadReview();
  if (name === 'models') loadModels();
  if (name === 'label') loadSessions();
}

function onKey(event) {
  if (event.target.closest('input, textarea, select') || event.ctrlKey || event.metaKey || event.altKey) return;
  const index = parseInt(event.key, 10) - 1;
  if (index >= 0 && index < config.classes.length) {
    event.preventDefault();
    if (currentTab === 'review') labelReview(config.classes[index]);
    else if (currentTab === 'label') capture(config.classes[index]);
  } else if (event.key === 'x' && currentTab === 'review') {
    discardReview();
  }
}

async function start() {
  takeTokenFromAddress();
  config = await (await fetch('/api/config', { cache: 'no-store' })).json();
  $('legend').style.background = `linear-gradient(to right, ${config.depth_colours.join(', ')})`;
  classButtons($('class-buttons'), capture);
  classButtons($('review-buttons'), labelReview);
  $('session-form').addEventListener('submit', startSession);
  $('session-stop').addEventListener('click', stopSession);
  $('continuous').addEventListener('change', toggleContinuous);
  $('review-discard').addEventListener('click', discardReview);
  $('review-finish').addEventListener('click', finishReview);
  $('upload-form').addEventListener('submit', upload);
  for (const button of document.querySelectorAll('.tab')) button.addEventListener('click', () => showTab(button.dataset.tab));
  document.addEventListener('keydown', onKey);
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    token = $('token-input').value.trim();
    sessionStorage.setItem('weldConsoleToken', token);
    $('token-form').hidden = true;
    say('');
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(); // reconnects with the new token
    else connect();
    showTab(currentTab);
  });
  if (config.token_required && !token) {
    askForToken('this console needs its token');
    return;
  }
  connect();
  showTab('label');
}

start();
