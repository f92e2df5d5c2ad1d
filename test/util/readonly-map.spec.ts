import { describe, expect, test } from '@jest/globals';
import { ReadonlyMapView } from '../../lib/util/readonly-map.js';

describe('ReadonlyMapView', () => {
  test('reads the map as it is now: size, get, has, iteration in insertion order', () => {
    const map = new Map([['a', 1]]);
    const view = new ReadonlyMapView(map);
    expect([view.size, view.get('a'), view.has('b')]).toEqual([1, 1, false]);
    map.set('b', 2);
    map.delete('a');
    map.set('c', 3);
    expect([view.size, view.get('a'), view.has('b')]).toEqual([2, undefined, true]);
    expect([...view]).toEqual([
      ['b', 2],
      ['c', 3],
    ]);
    expect([...view.keys()]).toEqual(['b', 'c']);
    expect([...view.values()]).toEqual([2, 3]);
    expect([...view.entries()]).toEqual([...map.entries()]);
    expect(Object.prototype.toString.call(view)).toBe('[object ReadonlyMapView]');
  });

  test('forEach passes value, key and the view (not the map), with thisArg', () => {
    const map = new Map([
      ['x', 10],
      ['y', 20],
    ]);
    const view = new ReadonlyMapView(map);
    const seen: unknown[] = [];
    const self = { tag: 'this' };
    view.forEach(function (this: unknown, value, key, owner) {
      seen.push([value, key, owner === view, this]);
    }, self);
    expect(seen).toEqual([
      [10, 'x', true, self],
      [20, 'y', true, self],
    ]);
  });

  test('has no way to change the map, and does not lead back to it', () => {
    const map = new Map([['a', 1]]);
    const view = new ReadonlyMapView(map) as unknown as Record<string, unknown>;
    for (const name of ['set', 'delete', 'clear']) expect(view[name]).toBeUndefined();
    expect(Object.keys(view)).toEqual([]);
    expect(Reflect.ownKeys(view)).toEqual([]);
    expect(map.size).toBe(1);
  });
});
