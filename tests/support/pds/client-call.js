#!/usr/bin/env node
// Call an app.bsky.video.* method on any XRPC service with the real
// @atproto/api client (its generated methods, which validate every answer
// against the lexicons), and print one JSON object on stdout:
//   success: {"ok": true, "status": 200, "data": {...}, "headers": {...}}
//   failure: {"ok": false, "status": N, "error": "...", "message": "...",
//             "invalidResponse": bool, "validationError"?: "...", "responseBody"?: ...}
// Exit code 0 either way (a failed call is a result); 2 on bad usage.
//
// Usage: node client-call.js '<json spec>'
//   spec = {
//     "method": "getJobStatus" | "getUploadLimits" | "uploadVideo"
//               (or the full NSID "app.bsky.video.getJobStatus"...),
//     "service": "http://127.0.0.1:PORT",   the video service
//     "token": "<service-auth JWT>",        sent as Authorization: Bearer (optional)
//     "params": {"jobId": "..."},           lexicon query params (getJobStatus)
//     "bodyFile": "/path/video.mp4",        uploadVideo body (raw bytes)
//     "encoding": "video/mp4",              uploadVideo Content-Type (default video/mp4)
//     "query": {"did": "...", "name": "x.mp4"}  extra query params the lexicon does not
//               declare but social-app sends on uploadVideo; appended on the wire
//   }
'use strict'
const fs = require('node:fs')
const { AtpAgent } = require('@atproto/api')

const METHODS = ['getJobStatus', 'getUploadLimits', 'uploadVideo']

function usage(msg) {
  console.error(`client-call.js: ${msg}`)
  process.exit(2)
}

async function main() {
  if (!process.argv[2]) usage("missing JSON spec argument")
  const spec = JSON.parse(process.argv[2])
  const method = String(spec.method || '').replace(/^app\.bsky\.video\./, '')
  if (!METHODS.includes(method)) usage(`unknown method ${spec.method}`)
  if (!spec.service) usage('missing service')

  let last = null
  const extraQuery = spec.query || {}
  const fetchImpl = async (input, init) => {
    // The agent passes either (url, init) or a ready Request (its session fetch
    // handler). Untouched unless extra query params are asked for; then the body is
    // buffered again so it still goes out with a content-length.
    let res
    if (!Object.keys(extraQuery).length) {
      res = await globalThis.fetch(input, init)
    } else {
      const req = new Request(input, init)
      const url = new URL(req.url)
      for (const [k, v] of Object.entries(extraQuery)) url.searchParams.append(k, String(v))
      const body = ['GET', 'HEAD'].includes(req.method) ? undefined : Buffer.from(await req.arrayBuffer())
      res = await globalThis.fetch(url, { method: req.method, headers: req.headers, body })
    }
    last = { status: res.status }
    return res
  }
  const agent = new AtpAgent({ service: spec.service, fetch: fetchImpl })
  const headers = spec.token ? { authorization: `Bearer ${spec.token}` } : {}
  const video = agent.app.bsky.video

  let res
  try {
    if (method === 'getJobStatus') {
      res = await video.getJobStatus(spec.params || {}, { headers })
    } else if (method === 'getUploadLimits') {
      res = await video.getUploadLimits(spec.params || {}, { headers })
    } else {
      if (!spec.bodyFile) usage('uploadVideo needs bodyFile')
      const data = fs.readFileSync(spec.bodyFile)
      res = await video.uploadVideo(data, { encoding: spec.encoding || 'video/mp4', headers })
    }
  } catch (err) {
    const out = {
      ok: false,
      status: last ? last.status : null,
      error: err.error ?? null,
      message: err.message ?? String(err),
      invalidResponse: err.constructor?.name === 'XRPCInvalidResponseError',
    }
    if (err.validationError) out.validationError = String(err.validationError.message || err.validationError)
    if (err.responseBody !== undefined) out.responseBody = err.responseBody
    console.log(JSON.stringify(out))
    return
  }
  console.log(JSON.stringify({ ok: true, status: last ? last.status : null, data: res.data, headers: res.headers }))
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
})
