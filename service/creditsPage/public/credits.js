/*
 * The credits widget: a user's balance by bucket, plan and period end, pending purchases, a buy button per
 * package and plan, "Sync credits", and live updates from the balance stream. A product includes it on its
 * own page:
 *
 *   <link rel="stylesheet" href="https://billing.example.com/billing/credits.css">
 *   <script src="https://billing.example.com/billing/credits.js"></script>
 *   <div id="credits"></div>
 *   <script>
 *     BillingCredits.mount(document.getElementById('credits'), {
 *       getSessionToken: () => myApp.sessionToken(),   // the product's sign-in; called before each request
 *     });
 *   </script>
 *
 * Options: apiBase (default: where this script came from), getSessionToken (required, may return a
 * promise), onUnauthorized (the session was refused), checkoutTarget ('new-tab', default: the page stays open
 * and updates live; or 'same-tab'). The session token travels in the Authorization header only; the stream
 * is opened with a single-use ticket, a new one at each reconnection.
 */
(function () {
  'use strict';

  var scriptOrigin = (function () {
    var script = document.currentScript;
    return script && script.src ? new URL(script.src, location.href).origin : location.origin;
  })();
  var maxReconnectDelayMillis = 30000;

  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === 'text') node.textContent = attributes[name];
      else node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function money(amount, currency) {
    if (amount === null || amount === undefined || !currency) return '';
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency.toUpperCase() }).format(amount / 100);
    } catch {
      return (amount / 100).toFixed(2) + ' ' + currency.toUpperCase();
    }
  }

  function number(value) {
    return new Intl.NumberFormat().format(value);
  }

  function mount(container, options) {
    if (!container || typeof options.getSessionToken !== 'function') throw new Error('BillingCredits.mount(element, { getSessionToken }) needs an element and a getSessionToken function');
    var apiBase = (options.apiBase || scriptOrigin).replace(/\/$/, '');
    var checkoutTarget = options.checkoutTarget || 'new-tab';
    var stream = null;
    var reconnectTimer = null;
    var reconnectDelay = 1000;
    var destroyed = false;

    container.classList.add('billing-credits');
    var ui = {
      total: element('p', { class: 'billing-total', 'aria-live': 'polite', 'aria-atomic': 'true', 'data-testid': 'total-credits', text: '…' }),
      subscription: element('dd', { 'data-testid': 'subscription-credits', text: '…' }),
      purchased: element('dd', { 'data-testid': 'purchased-credits', text: '…' }),
      plan: element('dd', { 'data-testid': 'plan', text: '…' }),
      periodEnd: element('dd', { 'data-testid': 'period-end', text: '…' }),
      pending: element('ul', { class: 'billing-pending', 'data-testid': 'pending-purchases' }),
      packages: element('ul', { class: 'billing-offers' }),
      plans: element('ul', { class: 'billing-offers' }),
      sync: element('button', { type: 'button', class: 'billing-secondary', text: 'Sync credits' }),
      status: element('p', { class: 'billing-status', role: 'status', 'aria-live': 'polite' }),
      live: element('p', { class: 'billing-live', 'data-testid': 'stream-state', text: 'Connecting…' }),
    };
    container.replaceChildren(
      element('section', { class: 'billing-card', 'aria-labelledby': 'billing-credits-heading' }, [
        element('h2', { id: 'billing-credits-heading', text: 'Your credits' }),
        ui.total,
        element('dl', { class: 'billing-buckets' }, [
          element('dt', { text: 'Subscription credits' }), ui.subscription,
          element('dt', { text: 'Purchased credits' }), ui.purchased,
          element('dt', { text: 'Plan' }), ui.plan,
          element('dt', { text: 'Renews' }), ui.periodEnd,
        ]),
        ui.live,
      ]),
      element('section', { class: 'billing-card', 'aria-labelledby': 'billing-pending-heading' }, [
        element('h2', { id: 'billing-pending-heading', text: 'Pending purchases' }),
        ui.pending,
        ui.sync,
        ui.status,
      ]),
      element('section', { class: 'billing-card', 'aria-labelledby': 'billing-buy-heading' }, [
        element('h2', { id: 'billing-buy-heading', text: 'Buy credits' }),
        ui.packages,
        element('h3', { text: 'Plans' }),
        ui.plans,
      ]),
    );

    function say(text) {
      ui.status.textContent = text;
    }

    function request(method, path, body, headers) {
      return Promise.resolve(options.getSessionToken()).then(function (token) {
        var init = { method: method, headers: Object.assign({ Authorization: 'Bearer ' + token }, headers || {}) };
        if (body !== undefined) {
          init.headers['Content-Type'] = 'application/json';
          init.body = JSON.stringify(body);
        }
        return fetch(apiBase + path, init).then(function (response) {
          return response.json().catch(function () { return {}; }).then(function (json) {
            if (response.status === 401 && options.onUnauthorized) options.onUnauthorized();
            return { status: response.status, ok: response.ok, body: json, retryAfter: response.headers.get('Retry-After') };
          });
        });
      });
    }

    function render(view) {
      ui.total.textContent = number(view.total_credits) + ' credits';
      ui.subscription.textContent = number(view.credits_remaining);
      ui.purchased.textContent = number(view.purchased_credits_balance);
      ui.plan.textContent = view.plan ? view.plan + (view.subscription_status ? ' (' + view.subscription_status + ')' : '') : 'No plan';
      ui.periodEnd.textContent = view.current_period_end ? new Date(view.current_period_end).toLocaleDateString() : '—';
      ui.pending.replaceChildren.apply(
        ui.pending,
        view.pending_purchases.length === 0
          ? [element('li', { text: 'None' })]
          : view.pending_purchases.map(function (purchase) {
              var what = purchase.plan_id ? 'Plan, ' + number(purchase.credits) + ' credits a month' : number(purchase.credits) + ' credits';
              return element('li', { text: what + ': ' + (purchase.status === 'processing' ? 'payment on its way' : 'awaiting payment') });
            }),
      );
    }

    function buy(kind, id) {
      // Opened at once, within the click, so that no popup blocker stands in the way; filled in below.
      var checkoutWindow = checkoutTarget === 'new-tab' ? window.open('', '_blank') : null;
      say('Opening checkout…');
      var body = kind === 'plan' ? { plan_id: id } : { package_id: id };
      var key = window.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
      return request('POST', '/api/v1/billing/checkout', body, { 'Idempotency-Key': key }).then(function (answer) {
        if (!answer.ok) {
          if (checkoutWindow) checkoutWindow.close();
          say(answer.body.message || 'Checkout could not be opened.');
          return;
        }
        say('Checkout opened: pay there, your credits appear here.');
        if (checkoutWindow) checkoutWindow.location.href = answer.body.url;
        else location.assign(answer.body.url);
      }, function () {
        if (checkoutWindow) checkoutWindow.close();
        say('The billing service cannot be reached.');
      });
    }

    function offer(label, onClick) {
      var button = element('button', { type: 'button', text: label });
      button.addEventListener('click', onClick);
      return element('li', {}, [button]);
    }

    function loadPackages() {
      return fetch(apiBase + '/api/v1/billing/packages').then(function (response) { return response.json(); }).then(function (catalog) {
        ui.packages.replaceChildren.apply(ui.packages, catalog.packages.map(function (item) {
          var price = money(item.unit_amount, item.currency);
          return offer('Buy ' + item.name + (price ? ' for ' + price : ''), function () { buy('package', item.package_id); });
        }));
        ui.plans.replaceChildren.apply(ui.plans, catalog.plans.map(function (item) {
          var price = money(item.unit_amount, item.currency);
          return offer('Subscribe to ' + item.name + ' (' + number(item.monthly_credits) + ' credits a month' + (price ? ', ' + price + ' a month' : '') + ')', function () { buy('plan', item.plan_id); });
        }));
      });
    }

    function sync() {
      ui.sync.disabled = true;
      say('Asking Stripe…');
      return request('POST', '/api/v1/billing/sync-payment').then(function (answer) {
        ui.sync.disabled = false;
        if (answer.status === 429) return say('Synced a moment ago: try again in ' + (answer.retryAfter || 'a few') + ' s.');
        if (!answer.ok) return say(answer.body.message || 'Sync failed.');
        render(answer.body);
        say('Credits are up to date.');
      }, function () {
        ui.sync.disabled = false;
        say('The billing service cannot be reached.');
      });
    }
    ui.sync.addEventListener('click', sync);

    function connect() {
      if (destroyed) return;
      // A new ticket each time: a ticket opens one stream, and the session token never goes into a URL.
      request('POST', '/api/v1/billing/credits/stream-ticket').then(function (answer) {
        if (destroyed) return;
        if (!answer.ok) throw new Error(answer.body.message || 'no ticket');
        stream = new EventSource(apiBase + '/api/v1/billing/credits/stream?ticket=' + encodeURIComponent(answer.body.ticket));
        stream.addEventListener('open', function () {
          reconnectDelay = 1000;
          ui.live.textContent = 'Live';
        });
        stream.addEventListener('balance', function (message) {
          render(JSON.parse(message.data));
        });
        // The stream ended (session expired, a replica restarting, the network): reconnect with a new ticket.
        stream.addEventListener('error', function () {
          stream.close();
          stream = null;
          scheduleReconnect();
        });
      }).catch(function () {
        scheduleReconnect();
      });
    }

    function scheduleReconnect() {
      if (destroyed || reconnectTimer) return;
      ui.live.textContent = 'Reconnecting…';
      reconnectTimer = setTimeout(function () {
        reconnectTimer = null;
        connect();
      }, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, maxReconnectDelayMillis);
    }

    var checkout = new URLSearchParams(location.search).get('checkout');
    if (checkout === 'success') say('Payment received: your credits appear here as soon as Stripe confirms it. You may close this tab.');
    if (checkout === 'cancelled') say('Checkout cancelled: nothing was charged.');

    request('GET', '/api/v1/billing/credits').then(function (answer) { if (answer.ok) render(answer.body); });
    loadPackages().catch(function () { say('The packages cannot be loaded.'); });
    connect();

    return {
      refresh: function () { return request('GET', '/api/v1/billing/credits').then(function (answer) { if (answer.ok) render(answer.body); }); },
      sync: sync,
      destroy: function () {
        destroyed = true;
        if (stream) stream.close();
        clearTimeout(reconnectTimer);
        container.replaceChildren();
      },
    };
  }

  window.BillingCredits = { mount: mount };
})();
