import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeGrpcMessage, grpcStatusLabel, isGrpcRequest, parseGrpcTimeout, splitTrailersOnly, trailersOf } from '../../src/proxy/grpc.ts';
import { ERROR_CODES, grpcStatusOf, type ErrorCode } from '../../src/core/errors.ts';

describe('parseGrpcTimeout', () => {
  const cases: [string | string[] | undefined, number | undefined | 'invalid'][] = [
    [undefined, undefined],
    ['1H', 3_600_000],
    ['2M', 120_000],
    ['3S', 3_000],
    ['300m', 300],
    ['1500u', 1.5],
    ['99999999n', 99.999999],
    ['123456789S', 'invalid'],
    ['', 'invalid'],
    ['10', 'invalid'],
    ['10x', 'invalid'],
    ['-1S', 'invalid'],
    ['1.5S', 'invalid'],
    [' 1S', 'invalid'],
    ['__proto__', 'invalid'],
    [['1S', '2S'], 'invalid'],
  ];
  for (const [value, expected] of cases) test(JSON.stringify(value) ?? 'undefined', () => assert.equal(parseGrpcTimeout(value), expected));
});

describe('isGrpcRequest', () => {
  const cases: [string | undefined, boolean][] = [
    ['application/grpc', true],
    ['application/grpc+proto', true],
    ['application/GRPC+json', true],
    ['application/grpc; charset=utf-8', true],
    ['application/grpc-web', false],
    ['application/grpc-web+proto', false],
    ['application/json', false],
    ['application/grpcx', false],
    [undefined, false],
  ];
  for (const [type, expected] of cases) test(String(type), () => assert.equal(isGrpcRequest(type === undefined ? {} : { 'content-type': type }), expected));
});

describe('grpcStatusLabel keeps the series bounded', () => {
  const cases: [unknown, string][] = [['0', '0'], ['16', '16'], ['17', 'invalid'], ['04', 'invalid'], ['abc', 'invalid'], [['5'], '5'], [undefined, 'invalid'], ['constructor', 'invalid']];
  for (const [value, expected] of cases) test(String(value), () => assert.equal(grpcStatusLabel(value), expected));
});

describe('trailers', () => {
  test('an HTTP/2 trailers object: pseudo and connection fields dropped, status read', () => {
    const { trailers, grpcStatus } = trailersOf({ 'grpc-status': '5', 'grpc-message': 'nope', ':status': '200', connection: 'close', 'x-a-bin': 'AAE=' });
    assert.equal(grpcStatus, '5');
    assert.deepEqual({ ...trailers }, { 'grpc-status': '5', 'grpc-message': 'nope', 'x-a-bin': 'AAE=' });
  });
  test('an HTTP/1.1 raw list, repeated names joined; prototype names are plain names', () => {
    const { trailers, grpcStatus } = trailersOf([Buffer.from('X-A'), Buffer.from('1'), Buffer.from('x-a'), Buffer.from('2'), Buffer.from('__proto__'), Buffer.from('p')]);
    assert.equal(grpcStatus, undefined);
    assert.equal(trailers['x-a'], '1, 2');
    assert.equal(Object.getOwnPropertyDescriptor(trailers, '__proto__')?.value, 'p');
  });
  test('nothing usable', () => {
    assert.deepEqual({ ...trailersOf(null).trailers }, {});
    assert.deepEqual({ ...trailersOf('x').trailers }, {});
  });
  test('a trailers-only head is split into head and status trailers', () => {
    const split = splitTrailersOnly(['content-type', 'application/grpc', 'Grpc-Status', '5', 'grpc-message', 'm', 'x-request-id', 'r']);
    assert.deepEqual(split?.head, ['content-type', 'application/grpc', 'x-request-id', 'r']);
    assert.deepEqual({ ...split?.trailers }, { 'grpc-status': '5', 'grpc-message': 'm' });
    assert.equal(splitTrailersOnly(['content-type', 'application/grpc', 'grpc-message', 'only a message']), undefined);
  });
});

describe('gateway errors as gRPC statuses', () => {
  const expected: Partial<Record<ErrorCode, number>> = {
    route_not_found: 12,
    no_healthy_upstream: 14,
    upstream_busy: 14,
    circuit_open: 14,
    upstream_unreachable: 14,
    upstream_timeout: 4,
    unauthorized: 16,
    insufficient_scope: 7,
    rate_limited: 8,
    bad_request: 13,
  };
  for (const [code, status] of Object.entries(expected)) test(code, () => assert.equal(grpcStatusOf(code as ErrorCode), status));
  test('every code has a status in 1-16', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) assert.ok(grpcStatusOf(code) >= 1 && grpcStatusOf(code) <= 16, code);
  });
  test('grpc-message is percent-encoded UTF-8', () => {
    assert.equal(encodeGrpcMessage('no such: ü 100%'), 'no such: %C3%BC 100%25');
    assert.equal(decodeURIComponent(encodeGrpcMessage('line\nbreak \uD800')), 'line\nbreak \uFFFD');
  });
});
