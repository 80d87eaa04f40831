"""The Lua script behind the passTLSClientCert middleware (translators/envoy/filter_pass_tls.py).

Kept as Python text: the translators package does no file I/O. The script reads the chain the
client sent (Envoy's URL-encoded PEM chain), strips it to Traefik's form, and parses each
certificate's DER for the Info header as Go's crypto/x509 does.
"""

from __future__ import annotations

SCRIPT = r"""-- Traefik's passTLSClientCert (pkg/middlewares/passtlsclientcert) in Envoy Lua.
-- The route's settings arrive as the filter context:
--   pem, info, serial, nb, na, sans: booleans;
--   subject, issuer: the selected attributes in Traefik's order (DC C ST L O OU SN CN).
-- The certificates are the chain the client sent (leaf first), as Go's PeerCertificates; the
-- fields come from parsing their DER here, as Go's crypto/x509 does, so every certificate of
-- the chain gets its own entry.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VALUE = {}
for i = 1, 64 do B64_VALUE[B64:byte(i)] = i - 1 end

local function unbase64(text)
  local out, acc, bits = {}, 0, 0
  for i = 1, #text do
    local v = B64_VALUE[text:byte(i)]
    if v then
      acc = acc * 64 + v
      bits = bits + 6
      if bits >= 8 then
        bits = bits - 8
        local byte = math.floor(acc / 2 ^ bits)
        acc = acc - byte * 2 ^ bits
        out[#out + 1] = string.char(byte)
      end
    end
  end
  return table.concat(out)
end

-- Go's url.QueryEscape.
local function query_escape(text)
  local escaped = text:gsub("[^A-Za-z0-9%-_%.~ ]", function(c)
    return string.format("%%%02X", c:byte())
  end)
  return (escaped:gsub(" ", "+"))
end

-- One DER element at pos: tag, first and last content index, next position.
local function tlv(der, pos)
  local tag, len = der:byte(pos), der:byte(pos + 1)
  if not tag or not len then error("truncated DER") end
  local p = pos + 2
  if len >= 128 then
    local n = len - 128
    len = 0
    for _ = 1, n do
      len = len * 256 + der:byte(p)
      p = p + 1
    end
  end
  if p + len - 1 > #der then error("truncated DER") end
  return tag, p, p + len - 1, p + len
end

-- The children of a constructed element.
local function children(der, first, last)
  local out, pos = {}, first
  while pos <= last do
    local tag, s, e, nxt = tlv(der, pos)
    out[#out + 1] = { tag = tag, s = s, e = e }
    pos = nxt
  end
  return out
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
  end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64,
      0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

-- A directory string as Go decodes it: BMPString from UTF-16, the others as their bytes.
local function dir_string(der, el)
  local raw = der:sub(el.s, el.e)
  if el.tag ~= 0x1E then return raw end
  local out, i = {}, 1
  while i + 1 <= #raw do
    local u = raw:byte(i) * 256 + raw:byte(i + 1)
    i = i + 2
    if u >= 0xD800 and u < 0xDC00 and i + 1 <= #raw then
      local low = raw:byte(i) * 256 + raw:byte(i + 1)
      i = i + 2
      u = 0x10000 + (u - 0xD800) * 1024 + (low - 0xDC00)
    end
    out[#out + 1] = utf8_char(u)
  end
  return table.concat(out)
end

local ATTRIBUTE = {
  ["\85\4\3"] = "CN", ["\85\4\5"] = "SN", ["\85\4\6"] = "C", ["\85\4\7"] = "L",
  ["\85\4\8"] = "ST", ["\85\4\10"] = "O", ["\85\4\11"] = "OU",
  ["\9\146\38\137\147\242\44\100\1\25"] = "DC",
}

-- A Name as Go's pkix.Name: every attribute in order (for DC), C/ST/L/O/OU lists, the last
-- CN and SN.
local function parse_name(der, el)
  local name = { DC = {}, C = {}, ST = {}, L = {}, O = {}, OU = {} }
  for _, rdn in ipairs(children(der, el.s, el.e)) do
    for _, atv in ipairs(children(der, rdn.s, rdn.e)) do
      local parts = children(der, atv.s, atv.e)
      local kind = ATTRIBUTE[der:sub(parts[1].s, parts[1].e)]
      if kind then
        local value = dir_string(der, parts[2])
        if kind == "CN" or kind == "SN" then
          name[kind] = value
        else
          local list = name[kind]
          list[#list + 1] = value
        end
      end
    end
  end
  return name
end

-- Traefik's getSubjectDNInfo / getIssuerDNInfo for the selected attributes.
local function dn_info(name, selected)
  local out = {}
  for _, kind in ipairs(selected) do
    if kind == "DC" then
      for _, v in ipairs(name.DC) do out[#out + 1] = "DC=" .. v end -- even when empty
    elseif kind == "CN" or kind == "SN" then
      local v = name[kind]
      if v and #v > 0 then out[#out + 1] = kind .. "=" .. v end
    else
      for _, v in ipairs(name[kind]) do
        if #v > 0 then out[#out + 1] = kind .. "=" .. v end
      end
    end
  end
  return table.concat(out, ",")
end

-- Decimal digits of a non-negative integer given as big-endian bytes.
local function decimal(bytes)
  local limbs = { 0 } -- base 1e7, least significant first
  for i = 1, #bytes do
    local carry = bytes:byte(i)
    for j = 1, #limbs do
      local v = limbs[j] * 256 + carry
      limbs[j] = v % 10000000
      carry = math.floor(v / 10000000)
    end
    while carry > 0 do
      limbs[#limbs + 1] = carry % 10000000
      carry = math.floor(carry / 10000000)
    end
  end
  local out = { tostring(limbs[#limbs]) }
  for j = #limbs - 1, 1, -1 do out[#out + 1] = string.format("%07d", limbs[j]) end
  return table.concat(out)
end

-- big.Int.String of a DER INTEGER (two's complement).
local function integer_string(raw)
  if #raw == 0 then return "0" end
  if raw:byte(1) < 0x80 then return decimal(raw) end
  local bytes, carry = {}, 1
  for i = #raw, 1, -1 do
    local v = 255 - raw:byte(i) + carry
    carry = math.floor(v / 256)
    bytes[i] = string.char(v % 256)
  end
  return "-" .. decimal(table.concat(bytes))
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- Go's fmt "%d" of uint64(t.Unix()) for a UTCTime or GeneralizedTime (Z form, as Go requires).
local function unix_string(der, el)
  local text = der:sub(el.s, el.e)
  local y, rest
  if el.tag == 0x17 then
    y = tonumber(text:sub(1, 2))
    y = y + (y < 50 and 2000 or 1900)
    rest = text:sub(3)
  else
    y = tonumber(text:sub(1, 4))
    rest = text:sub(5)
  end
  local mo, d, h, mi, s = rest:match("^(%d%d)(%d%d)(%d%d)(%d%d)(%d%d)")
  local t = days_from_civil(y, tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  if t >= 0 then return string.format("%d", t) end
  -- uint64 of a negative time: 2^64 - |t|, digit by digit.
  local a, b = "18446744073709551616", string.format("%020d", -t)
  local out, borrow = {}, 0
  for i = 20, 1, -1 do
    local v = tonumber(a:sub(i, i)) - tonumber(b:sub(i, i)) - borrow
    borrow = v < 0 and 1 or 0
    out[i] = tostring(v % 10)
  end
  return (table.concat(out):gsub("^0+", ""))
end

-- Go's net.IP.String.
local function ip_string(raw)
  if #raw == 16 and raw:sub(1, 12) == "\0\0\0\0\0\0\0\0\0\0\255\255" then raw = raw:sub(13) end
  if #raw == 4 then
    return string.format("%d.%d.%d.%d", raw:byte(1, 4))
  end
  if #raw ~= 16 then
    local hex = raw:gsub(".", function(c) return string.format("%02x", c:byte()) end)
    return "?" .. hex
  end
  local groups = {}
  for i = 1, 8 do groups[i] = raw:byte(2 * i - 1) * 256 + raw:byte(2 * i) end
  local best, best_len, i = 0, 0, 1
  while i <= 8 do
    if groups[i] == 0 then
      local j = i
      while j <= 8 and groups[j] == 0 do j = j + 1 end
      if j - i > best_len then best, best_len = i, j - i end
      i = j
    else
      i = i + 1
    end
  end
  local hex = {}
  for k = 1, 8 do hex[k] = string.format("%x", groups[k]) end
  if best_len < 2 then return table.concat(hex, ":") end
  return table.concat(hex, ":", 1, best - 1) .. "::" .. table.concat(hex, ":", best + best_len, 8)
end

-- Traefik's getSANs: DNS names, e-mail addresses, IP addresses, URIs.
local function sans(der, extensions)
  local found = { [0x82] = {}, [0x81] = {}, [0x87] = {}, [0x86] = {} }
  for _, ext in ipairs(extensions) do
    local parts = children(der, ext.s, ext.e)
    if der:sub(parts[1].s, parts[1].e) == "\85\29\17" then
      local octets = parts[#parts]
      local _, s, e = tlv(der, octets.s)
      for _, gn in ipairs(children(der, s, e)) do
        local list = found[gn.tag]
        if list then
          local raw = der:sub(gn.s, gn.e)
          list[#list + 1] = gn.tag == 0x87 and ip_string(raw) or raw
        end
      end
    end
  end
  local out = {}
  for _, tag in ipairs({ 0x82, 0x81, 0x87, 0x86 }) do
    for _, v in ipairs(found[tag]) do out[#out + 1] = v end
  end
  return out
end

local function cert_info(der, ctx)
  local _, s, e = tlv(der, 1)
  local cert = children(der, s, e)
  local tbs = children(der, cert[1].s, cert[1].e)
  local i = 1
  if tbs[1].tag == 0xA0 then i = 2 end -- explicit version
  local serial, issuer, validity, subject = tbs[i], tbs[i + 2], tbs[i + 3], tbs[i + 4]
  local extensions = {}
  for j = i + 6, #tbs do
    if tbs[j].tag == 0xA3 then
      local seq = children(der, tbs[j].s, tbs[j].e)[1]
      extensions = children(der, seq.s, seq.e)
    end
  end
  local values = {}
  local subj = dn_info(parse_name(der, subject), ctx.subject or {})
  if subj ~= "" then values[#values + 1] = 'Subject="' .. subj .. '"' end
  local iss = dn_info(parse_name(der, issuer), ctx.issuer or {})
  if iss ~= "" then values[#values + 1] = 'Issuer="' .. iss .. '"' end
  if ctx.serial then
    values[#values + 1] = 'SerialNumber="' .. integer_string(der:sub(serial.s, serial.e)) .. '"'
  end
  local times = children(der, validity.s, validity.e)
  if ctx.nb then values[#values + 1] = 'NB="' .. unix_string(der, times[1]) .. '"' end
  if ctx.na then values[#values + 1] = 'NA="' .. unix_string(der, times[2]) .. '"' end
  if ctx.sans then
    local names = sans(der, extensions)
    if #names > 0 then values[#values + 1] = 'SAN="' .. table.concat(names, ",") .. '"' end
  end
  return table.concat(values, ";")
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- The client's own copies never reach the backend (Traefik's forwarded-headers handling).
  headers:remove("x-forwarded-tls-client-cert")
  headers:remove("x-forwarded-tls-client-cert-info")
  -- The filter context is a metadata map: read its keys with get().
  local context = handle:filterContext()
  local ctx = {}
  for _, key in ipairs({ "pem", "info", "subject", "issuer", "serial", "nb", "na", "sans" }) do
    ctx[key] = context:get(key)
  end
  local ssl = handle:streamInfo():downstreamSslConnection()
  if ssl == nil or not ssl:peerCertificatePresented() then return end
  local chain = ssl:urlEncodedPemEncodedPeerCertificateChain():gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end)
  local bodies = {}
  for body in chain:gmatch("BEGIN[ +]CERTIFICATE%-+(.-)%-+END[ +]CERTIFICATE") do
    bodies[#bodies + 1] = body:gsub("[^A-Za-z0-9+/=]", "")
  end
  if #bodies == 0 then return end
  if ctx.pem then
    headers:replace("x-forwarded-tls-client-cert", table.concat(bodies, ","))
  end
  if ctx.info then
    local infos = {}
    for n, body in ipairs(bodies) do
      local ok, value = pcall(cert_info, unbase64(body), ctx)
      if not ok then
        handle:logWarn("passTLSClientCert: cannot parse client certificate: " .. tostring(value))
        value = ""
      end
      infos[n] = value
    end
    headers:replace("x-forwarded-tls-client-cert-info", query_escape(table.concat(infos, ",")))
  end
end
"""
