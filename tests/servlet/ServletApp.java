// A servlet app on an embedded Tomcat (Debian's libtomcat10-embed-java), for
// tests/forward_auth.rs: servlets on /admin/* and /public/* that say which one answered.
// Prints "port N" once listening, then one "hit SERVLET URI?QUERY" line per request (before
// answering it); exits when its stdin closes (the test binary that started it ended).
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import org.apache.catalina.Lifecycle;
import org.apache.catalina.core.StandardContext;
import org.apache.catalina.startup.Tomcat;

public class ServletApp {
    static class Echo extends HttpServlet {
        private final String name;

        Echo(String name) {
            this.name = name;
        }

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            String query = req.getQueryString() == null ? "" : "?" + req.getQueryString();
            synchronized (System.out) {
                System.out.println("hit " + name + " " + req.getRequestURI() + query);
                System.out.flush();
            }
            resp.setContentType("text/plain");
            resp.getWriter().print("servlet=" + name + " path=" + req.getServletPath()
                    + (req.getPathInfo() == null ? "" : req.getPathInfo()));
        }
    }

    public static void main(String[] args) throws Exception {
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(args[0]);
        tomcat.setHostname("127.0.0.1");
        tomcat.setPort(0);
        tomcat.getConnector().setProperty("address", "127.0.0.1");
        // Tomcat.addContext's listener scans annotations, which needs the jakarta.annotation
        // API (not in the package): a bare context, marked configured, instead.
        StandardContext ctx = new StandardContext();
        ctx.setName("");
        ctx.setPath("");
        ctx.setIgnoreAnnotations(true);
        ctx.addLifecycleListener(event -> {
            if (Lifecycle.CONFIGURE_START_EVENT.equals(event.getType())) {
                ctx.setConfigured(true);
            }
        });
        tomcat.getHost().addChild(ctx);
        for (String name : new String[] {"admin", "public"}) {
            Tomcat.addServlet(ctx, name, new Echo(name));
            ctx.addServletMappingDecoded("/" + name + "/*", name);
        }
        tomcat.start();
        System.out.println("port " + tomcat.getConnector().getLocalPort());
        System.out.flush();
        while (System.in.read() != -1) {
            // Nothing: the test never writes; EOF means it is gone.
        }
        System.exit(0);
    }
}
