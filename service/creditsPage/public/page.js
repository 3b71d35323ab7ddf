/* The stand-alone credits page at /billing/: a session token typed in (kept for this tab only), then the
 * same widget a product embeds with credits.js. Nothing secret is part of the page itself. */
(function () {
  'use strict';
  var storageKey = 'billing-session-token';
  var signIn = document.getElementById('sign-in');
  var signOut = document.getElementById('sign-out');
  var container = document.getElementById('credits');
  var widget = null;

  function token() {
    return sessionStorage.getItem(storageKey);
  }

  function show() {
    var signedIn = Boolean(token());
    signIn.hidden = signedIn;
    signOut.hidden = !signedIn;
    if (signedIn && !widget) {
      widget = window.BillingCredits.mount(container, {
        getSessionToken: function () { return Promise.resolve(token()); },
        onUnauthorized: function () { sessionStorage.removeItem(storageKey); location.reload(); },
      });
    }
    if (!signedIn) document.getElementById('session-token').focus();
  }

  signIn.addEventListener('submit', function (event) {
    event.preventDefault();
    var value = document.getElementById('session-token').value.trim();
    if (!value) return;
    sessionStorage.setItem(storageKey, value);
    document.getElementById('session-token').value = '';
    show();
  });
  signOut.addEventListener('click', function () {
    sessionStorage.removeItem(storageKey);
    if (widget) widget.destroy();
    widget = null;
    show();
  });
  show();
})();
