#!/usr/bin/env node
// Test-only atproto network on loopback: a real did:plc directory
// (@did-plc/server, in-memory DB) and a real PDS (@atproto/pds, sqlite + disk
// blobstore), one account, and a small control server. Prints one JSON line
// (the "info") on stdout when ready and runs until SIGTERM/SIGINT (or until
// stdin closes, with EXIT_ON_STDIN_CLOSE=1, so a killed parent leaves nothing).
//
// Env (all optional):
//   BIND_HOST=127.0.0.1          every listener is pinned to this address
//   PLC_PORT, PDS_PORT, CONTROL_PORT   0 or unset = a free port
//   DATA_DIR=<dir>               sqlite + blobs (default: a temp dir, removed on exit)
//   HANDLE=alice.test PASSWORD=alice-pass EMAIL=alice@example.test
//   EXTRA_ACCOUNTS=bob.test:bob-pass,carol.test:carol-pass   more accounts at start
//   PLC_DOC_FORMAT=current|legacy  DID documents as plc.directory renders them
//                                (Multikey, default) or as @did-plc/server 0.0.1
//                                does (EcdsaSecp256k1VerificationKey2019)
//   BLOB_UPLOAD_LIMIT=<bytes>    uploadBlob cap (default 100 MiB; the PDS's own is 5 MiB)
//   INFO_FILE=<path>             also write the info there (written last: "ready")
//   LOG_ENABLED=true             the PDS's pino logs (stdout)
//
// Control server (info.controlUrl), loopback only, JSON in/out:
//   GET  /info
//   POST /accounts   {"handle": "bob.test", "password"?: "...", "email"?: "..."}
//   POST /pds/stop   {"mode": "refuse" | "error" | "hang"}  (default refuse)
//        refuse: close the PDS listener and drop its connections (connection refused)
//        error:  answer every PDS request 503 {"error":"ServiceUnavailable"}
//        hang:   accept requests and never answer them (until /pds/start)
//   POST /pds/start  reopen the PDS on the same port / stop failing
// The PLC directory stays up throughout.
'use strict'
const net = require('node:net')
const http = require('node:http')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const BIND_HOST = process.env.BIND_HOST || '127.0.0.1'
// Both servers call app.listen(port), i.e. all interfaces. Pin every numeric
// listen() without an explicit host to BIND_HOST.
const origListen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, BIND_HOST)
  }
  return origListen.apply(this, args)
}
if (!process.env.LOG_ENABLED) process.env.LOG_ENABLED = 'false'

const pds = require('@atproto/pds')
const plc = require('@did-plc/server')
const { Secp256k1Keypair, multibaseToBytes, formatMultikey } = require('@atproto/crypto')

const t0 = Date.now()

// --- DID document format --------------------------------------------------
// @did-plc/server 0.0.1 (the only npm release) renders keys in the legacy form:
// type EcdsaSecp256k1VerificationKey2019, z+base58btc(uncompressed point), id
// "#atproto". plc.directory renders type Multikey, publicKeyMultibase = the
// did:key body (zQ3s...), id "<did>#atproto", plus the multikey/v1 context.
const LEGACY_TYPES = {
  EcdsaSecp256k1VerificationKey2019: 'ES256K',
  EcdsaSecp256r1VerificationKey2019: 'ES256',
}
function currentDocFormat(doc) {
  const ctx = ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1']
  for (const c of doc['@context'] || []) if (!ctx.includes(c)) ctx.push(c)
  const vms = (doc.verificationMethod || []).map((vm) => {
    const alg = LEGACY_TYPES[vm.type]
    if (!alg) return vm
    return {
      id: vm.id.startsWith('#') ? doc.id + vm.id : vm.id,
      type: 'Multikey',
      controller: vm.controller,
      publicKeyMultibase: formatMultikey(alg, multibaseToBytes(vm.publicKeyMultibase)),
    }
  })
  return { ...doc, '@context': ctx, verificationMethod: vms }
}

// Put a middleware right after express's own init layer (before every route).
function prependMiddleware(app, fn) {
  app.use(fn)
  const stack = app._router.stack
  const layer = stack.pop()
  const at = stack.findIndex((l) => l.name === 'expressInit') + 1
  stack.splice(at, 0, layer)
}

function installDocRewrite(app) {
  prependMiddleware(app, (req, res, next) => {
    if (req.method === 'GET' && /^\/did:[a-z]+:[^/]+$/.test(decodeURIComponent(req.path))) {
      const send = res.send
      res.send = function (body) {
        if (typeof body === 'string' && /did\+ld\+json/.test(res.get('content-type') || '')) {
          try {
            body = JSON.stringify(currentDocFormat(JSON.parse(body)))
          } catch (e) {
            // not a DID document: leave it alone
          }
        }
        return send.call(this, body)
      }
    }
    next()
  })
}

// --- helpers ----------------------------------------------------------------
async function freePort() {
  const srv = net.createServer()
  await new Promise((resolve, reject) => {
    srv.once('error', reject)
    origListen.call(srv, 0, BIND_HOST, resolve)
  })
  const { port } = srv.address()
  await new Promise((resolve) => srv.close(resolve))
  return port
}

const envPort = async (name) => {
  const v = Number(process.env[name] || 0)
  return v > 0 ? v : freePort()
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      if (!raw) return resolve({})
      try {
        resolve(JSON.parse(raw))
      } catch (e) {
        reject(new Error('invalid JSON body'))
      }
    })
    req.on('error', reject)
  })
}

// --- main -------------------------------------------------------------------
async function main() {
  const ownDataDir = !process.env.DATA_DIR
  const dataDir = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'atproto-video-pds-'))
  fs.mkdirSync(path.join(dataDir, 'blobs'), { recursive: true })
  const docFormat = process.env.PLC_DOC_FORMAT || 'current'
  if (!['current', 'legacy'].includes(docFormat)) throw new Error(`PLC_DOC_FORMAT=${docFormat}?`)
  const blobUploadLimit = Number(process.env.BLOB_UPLOAD_LIMIT || 100 * 1024 * 1024)

  // PLC directory, in-memory database.
  const plcServer = plc.PlcServer.create({ db: plc.Database.mock(), port: await envPort('PLC_PORT') })
  if (docFormat === 'current') installDocRewrite(plcServer.app)
  await plcServer.start()
  const plcPort = plcServer.server.address().port
  const plcUrl = `http://127.0.0.1:${plcPort}`

  // PDS: the knobs of @atproto/dev-env's TestPds without appview/moderation.
  // hostname defaults to localhost: publicUrl http://localhost:PORT and service
  // DID did:web:localhost, the audience a Bluesky client asks tokens for.
  const pdsPort = await envPort('PDS_PORT')
  const rotKey = await Secp256k1Keypair.create({ exportable: true })
  const env = {
    devMode: true,
    port: pdsPort,
    dataDirectory: dataDir,
    blobstoreDiskLocation: path.join(dataDir, 'blobs'),
    didPlcUrl: plcUrl,
    recoveryDidKey: (await Secp256k1Keypair.create()).did(),
    plcRotationKeyK256PrivateKeyHex: Buffer.from(await rotKey.export()).toString('hex'),
    adminPassword: 'admin-pass',
    jwtSecret: 'jwt-secret',
    serviceHandleDomains: ['.test'],
    inviteRequired: false,
    disableSsrfProtection: true,
    blobUploadLimit,
  }
  const server = await pds.PDS.create(pds.envToCfg(env), pds.envToSecrets(env))
  // Never let handle resolution reach DNS or the outside: local accounts only.
  server.ctx.idResolver.handle.resolve = async (h) => {
    const row = await server.ctx.accountManager.getAccount(h).catch(() => null)
    return row?.did
  }

  // Outage simulation (see header). "error"/"hang" are answered before any route.
  let outage = null // null | 'error' | 'hang' | 'refuse'
  const hung = new Set()
  prependMiddleware(server.app, (req, res, next) => {
    if (outage === 'error') {
      res.status(503).json({ error: 'ServiceUnavailable', message: 'PDS stopped by the test harness' })
      return
    }
    if (outage === 'hang') {
      hung.add(req.socket)
      return
    }
    next()
  })
  const sockets = new Set()
  const track = (srv) =>
    srv.on('connection', (s) => {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    })

  await server.start()
  track(server.server)
  const pdsUrl = `http://localhost:${pdsPort}`

  const closeListener = async () => {
    const srv = server.server
    if (!srv || !srv.listening) return
    const closed = new Promise((resolve) => srv.close(resolve))
    for (const s of sockets) s.destroy()
    await closed
  }
  const reopenListener = async () => {
    if (server.server && server.server.listening) return
    const srv = http.createServer(server.app)
    srv.keepAliveTimeout = 90000
    track(srv)
    await new Promise((resolve, reject) => {
      srv.once('error', reject)
      origListen.call(srv, pdsPort, BIND_HOST, resolve)
    })
    server.server = srv
    // PDS.destroy() calls terminator.terminate(): keep it pointing at the live listener.
    server.terminator = { terminate: closeListener }
  }
  const stopPds = async (mode = 'refuse') => {
    if (!['refuse', 'error', 'hang'].includes(mode)) throw new Error(`unknown mode ${mode}`)
    await startPds()
    outage = mode
    if (mode === 'refuse') await closeListener()
  }
  const startPds = async () => {
    if (outage === 'refuse') await reopenListener()
    for (const s of hung) s.destroy()
    hung.clear()
    outage = null
  }

  const createAccount = async ({ handle, password, email }) => {
    if (!handle) throw new Error('handle required')
    password = password || `${handle.split('.')[0]}-pass`
    email = email || `${handle.split('.')[0]}@example.test`
    const res = await fetch(`http://127.0.0.1:${pdsPort}/xrpc/com.atproto.server.createAccount`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ handle, email, password }),
    })
    const body = await res.json()
    if (!res.ok) {
      const err = new Error(`createAccount ${handle}: ${res.status} ${JSON.stringify(body)}`)
      err.status = res.status === 400 ? 400 : 500
      throw err
    }
    return { did: body.did, handle: body.handle, password, email }
  }

  const first = await createAccount({
    handle: process.env.HANDLE || 'alice.test',
    password: process.env.PASSWORD || 'alice-pass',
    email: process.env.EMAIL || 'alice@example.test',
  })
  const accounts = [first]
  for (const spec of (process.env.EXTRA_ACCOUNTS || '').split(',').filter(Boolean)) {
    const [handle, password] = spec.split(':')
    accounts.push(await createAccount({ handle, password }))
  }

  // Control server.
  const info = {
    did: first.did,
    handle: first.handle,
    password: first.password,
    email: first.email,
    accounts,
    pdsUrl,
    pdsPort,
    pdsServiceDid: server.ctx.cfg.service.did,
    plcUrl,
    plcPort,
    controlUrl: null,
    plcDocFormat: docFormat,
    blobUploadLimit,
    bind: BIND_HOST,
    dataDir,
    pid: process.pid,
    startupMs: 0,
  }
  const control = http.createServer(async (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(body))
    }
    try {
      const url = new URL(req.url, 'http://control')
      if (req.method === 'GET' && url.pathname === '/info') return reply(200, { ...info, outage })
      if (req.method !== 'POST') return reply(404, { error: 'NotFound' })
      const body = await readBody(req)
      if (url.pathname === '/accounts') {
        const acct = await createAccount(body)
        accounts.push(acct)
        return reply(200, acct)
      }
      if (url.pathname === '/pds/stop') {
        await stopPds(body.mode || 'refuse')
        return reply(200, { outage })
      }
      if (url.pathname === '/pds/start') {
        await startPds()
        return reply(200, { outage })
      }
      return reply(404, { error: 'NotFound' })
    } catch (err) {
      return reply(err.status || 500, { error: 'ControlError', message: String(err.message || err) })
    }
  })
  await new Promise((resolve, reject) => {
    control.once('error', reject)
    control.listen(Number(process.env.CONTROL_PORT || 0), BIND_HOST, resolve)
  })
  info.controlUrl = `http://127.0.0.1:${control.address().port}`
  info.startupMs = Date.now() - t0

  let closing = false
  const shutdown = async (code = 0) => {
    if (closing) return
    closing = true
    await startPds().catch(() => {})
    control.close()
    await server.destroy().catch(() => {})
    await plcServer.destroy().catch(() => {})
    if (ownDataDir) fs.rmSync(dataDir, { recursive: true, force: true })
    process.exit(code)
  }
  process.on('SIGTERM', () => shutdown(0))
  process.on('SIGINT', () => shutdown(0))
  if (process.env.EXIT_ON_STDIN_CLOSE === '1') {
    process.stdin.on('end', () => shutdown(0))
    process.stdin.on('error', () => shutdown(0))
    process.stdin.resume()
  }

  const line = JSON.stringify(info)
  if (process.env.INFO_FILE) {
    const tmp = `${process.env.INFO_FILE}.tmp`
    fs.writeFileSync(tmp, line + '\n')
    fs.renameSync(tmp, process.env.INFO_FILE)
  }
  console.log(line)
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
})
