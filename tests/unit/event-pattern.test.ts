import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnsupportedPatternError, matchesPattern } from '../helpers/event-pattern.js';

// The cases follow the examples of EventBridge's "event patterns" and "content filtering" docs.
const event = {
  version: '0',
  id: '6a7e8feb-b491-4cf7-a9f1-bf3703467718',
  'detail-type': 'EC2 Instance State-change Notification',
  source: 'aws.ec2',
  account: '111122223333',
  time: '2017-12-22T18:43:48Z',
  region: 'us-west-1',
  resources: ['arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0'],
  detail: {
    'instance-id': 'i-1234567890abcdef0',
    state: 'terminated',
    count: 5,
    flag: true,
    nothing: null,
    tags: ['a', 'b'],
    nested: { deep: 'x' },
  },
};

test('exact values: any listed value matches, a missing field never does, arrays match by any element', () => {
  assert.ok(matchesPattern(event, { source: ['aws.ec2'] }));
  assert.ok(matchesPattern(event, { source: ['aws.s3', 'aws.ec2'], 'detail-type': ['EC2 Instance State-change Notification'] }));
  assert.ok(!matchesPattern(event, { source: ['aws.s3'] }));
  assert.ok(!matchesPattern(event, { source: ['aws.ec2'], 'detail-type': ['Other'] }), 'every field must match');
  assert.ok(matchesPattern(event, { detail: { count: [5], flag: [true], nothing: [null] } }));
  assert.ok(!matchesPattern(event, { detail: { count: ['5'] } }), 'types are not coerced');
  assert.ok(!matchesPattern(event, { detail: { flag: [false] } }));
  assert.ok(!matchesPattern(event, { detail: { missing: ['x'] } }));
  assert.ok(matchesPattern(event, { detail: { tags: ['b'] } }));
  assert.ok(matchesPattern(event, { detail: { nested: { deep: ['x'] } } }));
  assert.ok(!matchesPattern(event, { detail: { state: { deep: ['x'] } } }), 'an object pattern needs an object');
});

test('prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists and $or', () => {
  assert.ok(matchesPattern(event, { region: [{ prefix: 'us-' }] }));
  assert.ok(!matchesPattern(event, { region: [{ prefix: 'eu-' }] }));
  assert.ok(matchesPattern(event, { region: [{ prefix: { 'equals-ignore-case': 'US-' } }] }));
  assert.ok(matchesPattern(event, { detail: { 'instance-id': [{ suffix: 'def0' }] } }));
  assert.ok(matchesPattern(event, { source: [{ 'equals-ignore-case': 'AWS.EC2' }] }));
  assert.ok(matchesPattern(event, { resources: [{ wildcard: 'arn:aws:ec2:*:instance/*' }] }));
  assert.ok(!matchesPattern(event, { resources: [{ wildcard: 'arn:aws:s3:*' }] }));
  assert.ok(matchesPattern(event, { detail: { state: [{ 'anything-but': 'running' }] } }));
  assert.ok(!matchesPattern(event, { detail: { state: [{ 'anything-but': ['running', 'terminated'] }] } }));
  assert.ok(!matchesPattern(event, { detail: { state: [{ 'anything-but': { prefix: 'term' } }] } }));
  assert.ok(!matchesPattern(event, { detail: { missing: [{ 'anything-but': 'x' }] } }), 'anything-but needs the field');
  assert.ok(matchesPattern(event, { detail: { count: [{ numeric: ['>', 0, '<=', 5] }] } }));
  assert.ok(!matchesPattern(event, { detail: { count: [{ numeric: ['>', 5] }] } }));
  assert.ok(matchesPattern(event, { detail: { count: [{ numeric: ['=', 5] }] } }));
  assert.ok(matchesPattern(event, { detail: { state: [{ exists: true }], missing: [{ exists: false }] } }));
  assert.ok(!matchesPattern(event, { detail: { state: [{ exists: false }] } }));
  assert.ok(matchesPattern(event, { $or: [{ source: ['aws.s3'] }, { detail: { count: [5] } }] }));
  assert.ok(!matchesPattern(event, { $or: [{ source: ['aws.s3'] }, { detail: { count: [6] } }] }));
});

test('an unsupported or malformed pattern throws instead of quietly not matching', () => {
  assert.throws(() => matchesPattern(event, { source: [{ cidr: '10.0.0.0/8' }] }), UnsupportedPatternError);
  assert.throws(() => matchesPattern(event, { source: 'aws.ec2' }), UnsupportedPatternError);
  assert.throws(() => matchesPattern(event, { detail: { count: [{ numeric: ['~', 5] }] } }), UnsupportedPatternError);
});
