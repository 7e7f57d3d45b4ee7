# The setup page (firmware/app/setup.py): one static HTML page with its script, no external
# resources. Bytes, so that frozen into the image it stays in flash and is sent from there in
# small writes (no copy on the heap). The API it calls: docs/product.md "Setup page".
PAGE = rb"""
<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Terminal setup</title><style>
body{font:15px sans-serif;margin:1em auto;max-width:36em;padding:0 .5em}
fieldset{margin:.8em 0}label{display:block;margin:.4em 0}ul{padding-left:1.2em}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.3em}
.e{color:#b00;display:block}.off{color:#777}.why{font-size:90%}#r{font-weight:bold}
</style></head><body>
<h1>Terminal setup</h1>
<p id="why">...</p><ul id="probs"></ul>
<form id="f" method="post" action="/api/setup">
<fieldset id="wifi"><legend>Wi-Fi network (WPA2/WPA3 only)</legend>
<ul id="nets"></ul><button type="button" id="rescan">Scan again</button>
<span class="e" id="e_ssid"></span>
<label>Network key (PSK)<input type="password" name="psk" id="psk" autocomplete="off"></label>
<span class="e" id="e_psk"></span></fieldset>
<fieldset><legend>Wi-SUN credentials</legend>
<label>ID (32 hexadecimal digits)<input type="text" name="id" id="id" autocomplete="off"
 autocapitalize="off" spellcheck="false"></label><span class="e" id="e_id"></span>
<label>Password<input type="password" name="password" id="password" autocomplete="off"></label>
<span class="e" id="e_password"></span></fieldset>
<span class="e" id="e_form"></span><button type="submit" id="go">Save and join</button>
</form><p id="r"></p>
<script>
const $=i=>document.getElementById(i);
const j=(u,o)=>fetch(u,o).then(r=>r.json());
function el(t,x,c){const e=document.createElement(t);if(x)e.textContent=x;
if(c)e.className=c;return e}
function info(){j('/api/setup').then(d=>{
$('why').textContent='Setup mode: '+d.why_text+'.';const u=$('probs');u.textContent='';
d.problems.forEach(p=>u.appendChild(el('li',p.key+': '+p.message)));
if(d.wifi)scan();else{$('wifi').style.display='none';$('go').textContent='Save'}
for(const k of['psk','id','password'])
if(d.have[k])$(k).placeholder='configured: leave empty to keep';
if(d.state!='setup')poll()})}
function scan(){const u=$('nets');u.textContent='';u.appendChild(el('li','scanning...','off'));
j('/api/scan').then(d=>{u.textContent='';for(const n of d.networks){
const li=el('li','',n.ok?'':'off'),l=el('label'),i=el('input');li.dataset.bssid=n.bssid;
i.type='radio';i.name='ssid';i.value=n.ssid===null?'':n.ssid;i.disabled=!n.ok;l.appendChild(i);
l.appendChild(document.createTextNode(' '+(n.ssid===null?'(name not UTF-8: '+n.ssid_hex+')':
n.ssid||'(hidden)')+' \u2014 '+n.sec+', '+n.rssi+' dBm'));li.appendChild(l);
if(!n.ok)li.appendChild(el('span','not selectable: '+n.why,'why'));u.appendChild(li)}
if(!u.firstChild)u.appendChild(el('li','no networks found','off'))},
()=>{u.textContent='';u.appendChild(el('li','scan failed','e'))})}
function poll(){j('/api/result').then(d=>{const r=$('r');
if(d.state=='joining'){r.textContent='Joining...';setTimeout(poll,1000)}
else if(d.state=='joined')r.textContent='joined: address '+d.detail+
' on your network. The terminal restarts with the new settings in a minute.';
else if(d.state=='saved')r.textContent='saved: the terminal restarts with the new settings.';
else if(d.state=='failed'){r.textContent='not joined: '+d.detail;$('go').disabled=false}},
()=>setTimeout(poll,2000))}
$('rescan').onclick=scan;
$('f').onsubmit=ev=>{ev.preventDefault();
const b={},s=document.querySelector('input[name=ssid]:checked');
for(const k of['ssid','psk','id','password','form'])$('e_'+k).textContent='';
if(s)b.ssid=s.value;for(const k of['psk','id','password'])b[k]=$(k).value;
$('r').textContent='';$('go').disabled=true;
j('/api/setup',{method:'POST',headers:{'Content-Type':'application/json'},body:JSON.stringify(b)})
.then(d=>{if(d.ok){poll();return}$('go').disabled=false;
for(const k in d.errors)($('e_'+k)||$('e_form')).textContent=d.errors[k]},
()=>{$('go').disabled=false;$('e_form').textContent='no answer from the terminal'})};
info();
</script></body></html>
"""
