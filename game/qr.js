// qr.js: a QR code encoder of our own, so the projector page can show the
// join address as a code a phone camera opens, with no library and no
// request to anyone else.
//
//   DinoQR.encode(text, {level: 'M'|'Q', mask: 0..7}) -> {version, level, mask, size, modules}
//   DinoQR.drawTo(canvas, text, {quiet: 4, scale: 8, level: 'M'})
//
// It does what a URL needs and no more: byte mode (UTF-8), versions 1 to 10
// (up to 213 bytes at level M), levels M and Q. The numbers below are facts
// from the QR code standard (ISO/IEC 18004); the rest is computed.
(function () {
  'use strict';

  // ---------------------------------------------------------------- tables

  const MAX_VERSION = 10;

  // Error-correction blocks for versions 1..10: [codewords of EC per block, blocks].
  // M recovers about 15 % of a damaged code, Q about 25 %; a projected code
  // is rarely damaged, so M keeps the modules big.
  const EC_BLOCKS = {
    M: [[10, 1], [16, 1], [26, 1], [18, 2], [24, 2], [16, 4], [18, 4], [22, 4], [22, 5], [26, 5]],
    Q: [[13, 1], [22, 1], [18, 2], [26, 2], [18, 4], [24, 4], [18, 6], [22, 6], [20, 8], [24, 8]]
  };
  const LEVEL_BITS = { M: 0b00, Q: 0b11 };   // as the format information spells the level

  const MODE_BYTE = 0b0100;
  const PAD_BYTES = [0xEC, 0x11];            // the standard's filler, alternating
  const FORMAT_GENERATOR = 0x537;            // BCH(15,5): x^10 + x^8 + x^5 + x^4 + x^2 + x + 1
  const FORMAT_XOR = 0x5412;                 // keeps the format bits from ever being all light
  const VERSION_GENERATOR = 0x1F25;          // Golay(18,6): x^12 + x^11 + x^10 + x^9 + x^8 + x^5 + x^2 + 1
  const GF_PRIMITIVE = 0x11D;                // x^8 + x^4 + x^3 + x^2 + 1, the field QR codes use

  // Penalty weights of the mask choice (N1..N4 in the standard).
  const PENALTY_RUN = 3;        // a run of 5 same-colour modules, +1 per module beyond
  const PENALTY_BOX = 3;        // each 2x2 block of one colour
  const PENALTY_FINDER = 40;    // each 1:1:3:1:1 pattern with 4 light modules beside it
  const PENALTY_BALANCE = 10;   // each 5 % the dark share strays from 50 %

  // ---------------------------------------------------------------- GF(256) and Reed-Solomon

  // Log and antilog tables turn field multiplication into an addition.
  const EXP = new Uint8Array(510);
  const LOG = new Uint8Array(256);
  (function buildField() {
    let value = 1;
    for (let power = 0; power < 255; power++) {
      EXP[power] = value;
      LOG[value] = power;
      value <<= 1;
      if (value & 0x100) value ^= GF_PRIMITIVE;
    }
    // A second copy lets multiply() skip the modulo 255.
    for (let power = 255; power < 510; power++) EXP[power] = EXP[power - 255];
  })();

  function multiply(a, b) {
    return a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]];
  }

  // (x - a^0)(x - a^1)...(x - a^(degree-1)), highest power first; its leading 1 included.
  function generatorPolynomial(degree) {
    let poly = [1];
    for (let root = 0; root < degree; root++) {
      const next = poly.concat(0);
      for (let i = 1; i < next.length; i++) next[i] ^= multiply(poly[i - 1], EXP[root]);
      poly = next;
    }
    return poly;
  }

  // The EC codewords are the remainder of data(x) * x^degree divided by the
  // generator: a shift register that takes one data codeword at a time.
  function errorCorrection(data, degree) {
    const generator = generatorPolynomial(degree);
    const remainder = new Array(degree).fill(0);
    for (const codeword of data) {
      const factor = codeword ^ remainder.shift();
      remainder.push(0);
      for (let i = 0; i < degree; i++) remainder[i] ^= multiply(generator[i + 1], factor);
    }
    return remainder;
  }

  // value * x^checkBits plus its remainder modulo generator, over GF(2): the
  // shape of both the format and the version information.
  function bchCode(value, generator, checkBits) {
    let remainder = value << checkBits;
    for (let bit = 31 - Math.clz32(remainder); bit >= checkBits; bit--) {
      if ((remainder >>> bit) & 1) remainder ^= generator << (bit - checkBits);
    }
    return (value << checkBits) | remainder;
  }

  // ---------------------------------------------------------------- the grid

  // modules[y][x] is true for dark; reserved[y][x] marks the function patterns,
  // which neither data nor the mask may touch.
  function newGrid(version) {
    const size = 17 + 4 * version;
    const rows = () => Array.from({ length: size }, () => new Array(size).fill(false));
    return { version, size, modules: rows(), reserved: rows() };
  }

  function setFunction(grid, x, y, dark) {
    if (x < 0 || y < 0 || x >= grid.size || y >= grid.size) return;
    grid.modules[y][x] = dark;
    grid.reserved[y][x] = true;
  }

  // Squares of rings around a centre: ring 0 is the centre itself.
  function drawRings(grid, cx, cy, radius, darkRing) {
    for (let dy = -radius; dy <= radius; dy++) {
      for (let dx = -radius; dx <= radius; dx++) {
        setFunction(grid, cx + dx, cy + dy, darkRing(Math.max(Math.abs(dx), Math.abs(dy))));
      }
    }
  }

  // Centres of the alignment patterns along one axis: 6, then evenly spaced
  // (an even step) back from size - 7.
  function alignmentCentres(version) {
    if (version === 1) return [];
    const count = Math.floor(version / 7) + 2;
    const last = 4 * version + 10;
    const step = 2 * Math.ceil((last - 6) / (count - 1) / 2);
    const centres = [];
    for (let i = 0; i < count - 1; i++) centres.unshift(last - i * step);
    centres.unshift(6);
    return centres;
  }

  // Where each of the 15 format bits goes, bit 0 first: one copy beside the
  // top-left finder, one split between the other two.
  function formatPositions(size) {
    const nearTopLeft = [];
    const split = [];
    for (let i = 0; i < 15; i++) {
      if (i < 6) nearTopLeft.push([8, i]);
      else if (i < 8) nearTopLeft.push([8, i + 1]);      // skips the timing row 6
      else if (i === 8) nearTopLeft.push([7, 8]);
      else nearTopLeft.push([14 - i, 8]);
      split.push(i < 8 ? [size - 1 - i, 8] : [8, size - 15 + i]);
    }
    return [nearTopLeft, split];
  }

  function drawFormat(grid, level, mask) {
    const bits = bchCode((LEVEL_BITS[level] << 3) | mask, FORMAT_GENERATOR, 10) ^ FORMAT_XOR;
    for (const copy of formatPositions(grid.size)) {
      copy.forEach(([x, y], i) => setFunction(grid, x, y, ((bits >>> i) & 1) === 1));
    }
    setFunction(grid, 8, grid.size - 8, true);   // the one module that is always dark
  }

  function drawFunctionPatterns(grid) {
    const { size, version } = grid;
    for (let i = 0; i < size; i++) {            // timing: alternating, dark on even
      setFunction(grid, 6, i, i % 2 === 0);
      setFunction(grid, i, 6, i % 2 === 0);
    }
    // Finders with their light separators (ring 4), drawn over the timing lines.
    const finderRing = (ring) => ring !== 2 && ring !== 4;
    drawRings(grid, 3, 3, 4, finderRing);
    drawRings(grid, size - 4, 3, 4, finderRing);
    drawRings(grid, 3, size - 4, 4, finderRing);

    const centres = alignmentCentres(version);
    const last = centres.length - 1;
    centres.forEach((cy, j) => centres.forEach((cx, i) => {
      const onFinder = (i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0);
      if (!onFinder) drawRings(grid, cx, cy, 2, (ring) => ring !== 1);
    }));

    drawFormat(grid, 'M', 0);    // reserves the places; the real bits come after the mask is chosen

    if (version >= 7) {           // two 6x3 copies of the version, so a reader knows the size for sure
      const bits = bchCode(version, VERSION_GENERATOR, 12);
      for (let i = 0; i < 18; i++) {
        const dark = ((bits >>> i) & 1) === 1;
        const along = Math.floor(i / 3);
        const across = size - 11 + (i % 3);
        setFunction(grid, across, along, dark);
        setFunction(grid, along, across, dark);
      }
    }
  }

  function freeModules(grid) {
    let count = 0;
    for (const row of grid.reserved) for (const taken of row) if (!taken) count++;
    return count;
  }

  // Data fills two-module-wide columns from the bottom right, up one column
  // pair and down the next, stepping over column 6 (the vertical timing line).
  function placeData(grid, codewords) {
    const { size } = grid;
    const total = codewords.length * 8;
    let bit = 0;
    let upward = true;
    for (let right = size - 1; right > 0; right -= 2) {
      if (right === 6) right = 5;
      for (let step = 0; step < size; step++) {
        const y = upward ? size - 1 - step : step;
        for (const x of [right, right - 1]) {
          if (grid.reserved[y][x]) continue;
          // Bits past the last codeword are the remainder bits: light before masking.
          grid.modules[y][x] = bit < total && ((codewords[bit >>> 3] >>> (7 - (bit & 7))) & 1) === 1;
          bit++;
        }
      }
      upward = !upward;
    }
  }

  // ---------------------------------------------------------------- masks

  const MASKS = [
    (x, y) => (x + y) % 2 === 0,
    (x, y) => y % 2 === 0,
    (x, y) => x % 3 === 0,
    (x, y) => (x + y) % 3 === 0,
    (x, y) => (Math.floor(y / 2) + Math.floor(x / 3)) % 2 === 0,
    (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
    (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
    (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0
  ];

  // XOR is its own inverse, so the same call puts a mask on and takes it off.
  function toggleMask(grid, mask) {
    const flips = MASKS[mask];
    for (let y = 0; y < grid.size; y++) {
      for (let x = 0; x < grid.size; x++) {
        if (!grid.reserved[y][x] && flips(x, y)) grid.modules[y][x] = !grid.modules[y][x];
      }
    }
  }

  // A dark-light-dark(3)-light-dark run with four light modules on one side:
  // what a reader takes for a finder. Outside the symbol counts as light.
  const FINDER_LIKE = [true, false, true, true, true, false, true];

  function linePenalty(line) {
    let score = 0;
    let runLength = 1;
    for (let i = 1; i <= line.length; i++) {
      if (i < line.length && line[i] === line[i - 1]) { runLength++; continue; }
      if (runLength >= 5) score += PENALTY_RUN + (runLength - 5);
      runLength = 1;
    }
    const lightAt = (i) => i < 0 || i >= line.length || !line[i];
    for (let start = 0; start + FINDER_LIKE.length <= line.length; start++) {
      if (!FINDER_LIKE.every((dark, k) => line[start + k] === dark)) continue;
      const end = start + FINDER_LIKE.length;
      if ([1, 2, 3, 4].every((k) => lightAt(start - k))) score += PENALTY_FINDER;
      if ([0, 1, 2, 3].every((k) => lightAt(end + k))) score += PENALTY_FINDER;
    }
    return score;
  }

  function penalty(grid) {
    const { size, modules } = grid;
    let score = 0;
    let dark = 0;
    for (let i = 0; i < size; i++) {
      score += linePenalty(modules[i]);
      score += linePenalty(modules.map((row) => row[i]));
    }
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        if (modules[y][x]) dark++;
        if (x + 1 < size && y + 1 < size) {
          const colour = modules[y][x];
          if (modules[y][x + 1] === colour && modules[y + 1][x] === colour && modules[y + 1][x + 1] === colour) {
            score += PENALTY_BOX;
          }
        }
      }
    }
    const percentDark = (dark * 100) / (size * size);
    score += PENALTY_BALANCE * Math.floor(Math.abs(percentDark - 50) / 5);
    return score;
  }

  // ---------------------------------------------------------------- the data

  function countBits(version) {
    return version <= 9 ? 8 : 16;      // byte mode's length field grows at version 10
  }

  // How the codewords of a version split: short blocks first, long ones one data codeword longer.
  function blockLayout(version, level) {
    const grid = newGrid(version);
    drawFunctionPatterns(grid);
    const total = Math.floor(freeModules(grid) / 8);
    const [ecPerBlock, blocks] = EC_BLOCKS[level][version - 1];
    const longBlocks = total % blocks;
    const shortData = Math.floor(total / blocks) - ecPerBlock;
    const dataCodewords = shortData * blocks + longBlocks;
    return { total, ecPerBlock, blocks, longBlocks, shortData, dataCodewords };
  }

  function pickVersion(byteCount, level) {
    for (let version = 1; version <= MAX_VERSION; version++) {
      const layout = blockLayout(version, level);
      if (4 + countBits(version) + 8 * byteCount <= layout.dataCodewords * 8) return { version, layout };
    }
    throw new RangeError(`DinoQR: ${byteCount} bytes do not fit a version ${MAX_VERSION} code at level ${level}`);
  }

  function dataCodewords(bytes, version, capacity) {
    const bits = [];
    const append = (value, length) => {
      for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    append(MODE_BYTE, 4);
    append(bytes.length, countBits(version));
    for (const byte of bytes) append(byte, 8);
    append(0, Math.min(4, capacity * 8 - bits.length));   // the terminator, cut short when full
    append(0, (8 - (bits.length % 8)) % 8);
    const codewords = [];
    for (let i = 0; i < bits.length; i += 8) {
      codewords.push(bits.slice(i, i + 8).reduce((byte, bit) => (byte << 1) | bit, 0));
    }
    for (let i = 0; codewords.length < capacity; i++) codewords.push(PAD_BYTES[i % 2]);
    return codewords;
  }

  // Each block gets its own EC codewords; then the blocks are read column by
  // column, so a smudge hurts every block a little rather than one a lot.
  function interleave(data, layout) {
    const blocks = [];
    let offset = 0;
    for (let b = 0; b < layout.blocks; b++) {
      const length = layout.shortData + (b >= layout.blocks - layout.longBlocks ? 1 : 0);
      const block = data.slice(offset, offset + length);
      offset += length;
      blocks.push({ data: block, ec: errorCorrection(block, layout.ecPerBlock) });
    }
    const out = [];
    for (let i = 0; i <= layout.shortData; i++) {
      for (const block of blocks) if (i < block.data.length) out.push(block.data[i]);
    }
    for (let i = 0; i < layout.ecPerBlock; i++) {
      for (const block of blocks) out.push(block.ec[i]);
    }
    return out;
  }

  // ---------------------------------------------------------------- the API

  function encode(text, options) {
    const level = (options && options.level) || 'M';
    if (!EC_BLOCKS[level]) throw new RangeError(`DinoQR: level ${level} is not one of ${Object.keys(EC_BLOCKS)}`);
    const bytes = new TextEncoder().encode(String(text));
    const { version, layout } = pickVersion(bytes.length, level);
    const codewords = interleave(dataCodewords(bytes, version, layout.dataCodewords), layout);

    const grid = newGrid(version);
    drawFunctionPatterns(grid);
    placeData(grid, codewords);

    let mask = options && options.mask;
    if (mask === undefined || mask === null) {
      // Try all eight and keep the one a reader finds easiest.
      let best = Infinity;
      for (let candidate = 0; candidate < MASKS.length; candidate++) {
        toggleMask(grid, candidate);
        drawFormat(grid, level, candidate);
        const score = penalty(grid);
        if (score < best) { best = score; mask = candidate; }
        toggleMask(grid, candidate);
      }
    }
    toggleMask(grid, mask);
    drawFormat(grid, level, mask);
    return { version, level, mask, size: grid.size, modules: grid.modules };
  }

  // Draws dark modules on white, with a quiet border of light modules that
  // readers need, at a whole number of canvas pixels per module so every
  // module has the same width.
  function drawTo(canvas, text, options) {
    const quiet = options && options.quiet !== undefined ? options.quiet : 4;
    const code = encode(text, options);
    const span = code.size + 2 * quiet;
    const scale = (options && options.scale) || Math.max(1, Math.floor(canvas.width / span));
    canvas.width = canvas.height = span * scale;
    const context = canvas.getContext('2d');
    context.fillStyle = '#fff';
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.fillStyle = '#000';
    code.modules.forEach((row, y) => row.forEach((dark, x) => {
      if (dark) context.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
    }));
    return code;
  }

  window.DinoQR = { encode, drawTo, MAX_VERSION };
})();
